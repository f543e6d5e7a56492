"""Freshness: which versions of a key the relay sends, per channel pattern.

Every envelope carries its object's ``version``. With ``all`` the relay sends
every version it claims, in order, at least once, and leaves stale ones to the
subscribers' version gates. The other two modes keep the relay itself from ever
moving a key backwards, for subscribers without a gate and for Centrifugo's
history::

    all ........ every version, in queue order
    monotonic .. (the default) never a version of a (channel, key) that is not newer
                 than the newest one the relay delivered or is sending: such an
                 envelope is dropped and counted as superseded
    latest ..... monotonic, and only the newest version of each (channel, key) in
                 hand: the claimed batch and the queue just behind it

The relay remembers, per shard, the last version it delivered of each (channel,
key) in Redis (``{prefix:N}:versions``, written by the ACK script together with
the ack; see ``protocol.scripts.ACK``). This module holds the decisions, pure
functions of what was claimed and what is remembered, so each rule is tested on
its own (``tests/unit/test_freshness.py``):

- ``supersede``: which claimed envelopes not to send;
- ``outdated``: which commands, answered with a code 100 and due for a retry,
  a newer version delivered meanwhile (in the same batch) superseded;
- ``latest_only``: which commands to leave out of a batch resent after an
  answer that says nothing certain (a timeout, a lost connection, a 5xx);
- ``newest``: the highest version per field, what the ack writes into the memory.

A batch that is redelivered (left in flight by a crash or a takeover) may have
been published in part already, in any prefix (or any subset, after a code
100). Sending it again whole could publish ``k@3`` after the ``k@5`` that the
first attempt published, once Centrifugo's idempotency window is over. So a
redelivered batch is sent latest-wins on every monotonic channel: only the
newest version of each key in it, which is at least as new as anything its
earlier attempt published. The same holds for a batch resent after an answer
that does not say what Centrifugo did with it (``latest_only``): a Centrifugo
that published it and then died before answering has forgotten its idempotency
keys when it comes back. (A request that never left, for want of a connection,
is resent whole.)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import attrs
import msgspec

__all__ = [
    "DEFAULT_FRESHNESS",
    "Candidate",
    "Freshness",
    "KeyVersion",
    "decode_key_version",
    "latest_only",
    "newest",
    "outdated",
    "supersede",
    "version_field",
]

T = TypeVar("T")


class Freshness(enum.StrEnum):
    """What the relay does with versions that are not the newest (module docstring)."""

    ALL = "all"
    MONOTONIC = "monotonic"
    LATEST = "latest"


DEFAULT_FRESHNESS = Freshness.MONOTONIC
"""The mode of a channel that matches no ``freshness`` pattern."""


def version_field(channel: str, key: str) -> str:
    """The field of a (channel, key) in a shard's versions hash.

    ``<length of channel>:<channel><key>``: one field per pair and never the same
    field for two pairs, whatever characters they hold.
    """
    return f"{len(channel)}:{channel}{key}"


@attrs.define
class Candidate:
    """What the decision needs to know of one envelope the relay could send.

    Not frozen: one is made per message on the hot path, and a frozen attrs
    class's ``__init__`` costs about three times a plain slotted one's.
    """

    field: str
    """``version_field(channel, key)``."""
    version: int
    latest: bool
    """Only the newest version of its field in hand is sent (``latest``, or a redelivery)."""


def supersede(
    candidates: Sequence[Candidate | None],
    known: Mapping[str, int],
    ahead: Mapping[str, int] | None = None,
) -> list[bool]:
    """Which of ``candidates`` (in sending order) are superseded and must not be sent.

    ``None`` stands for an envelope that freshness does not apply to (mode
    ``all``, or not sendable at all): never superseded. ``known`` is the
    remembered last delivered version per field, ``ahead`` the newest version
    per field in the queue behind the batch (for ``latest`` candidates).

    A candidate is superseded when its version is not newer than the known one
    or than an earlier candidate of its field that is sent; a ``latest``
    candidate also when a later candidate of its field, or an envelope ahead,
    has a newer version.
    """
    in_hand: dict[str, int] = dict(ahead or {})
    for candidate in candidates:
        if (
            candidate is not None
            and candidate.latest
            and candidate.version > in_hand.get(candidate.field, -1)
        ):
            in_hand[candidate.field] = candidate.version
    sent: dict[str, int] = {}
    superseded = []
    for candidate in candidates:
        if candidate is None:
            superseded.append(False)
            continue
        field, version = candidate.field, candidate.version
        floor = sent.get(field, known.get(field, -1))
        stale = version <= floor or (candidate.latest and version < in_hand.get(field, -1))
        superseded.append(stale)
        if not stale:
            sent[field] = version
    return superseded


def outdated(
    pending: Sequence[T], delivered: Mapping[str, int], candidate: Callable[[T], Candidate | None]
) -> tuple[list[T], list[T]]:
    """``pending`` split into (still newest, outdated by a delivered version).

    After a code 100 in the middle of a batch Centrifugo has accepted the
    commands after the failed one; a failed ``k@3`` that a delivered ``k@5``
    follows must not be retried: it would publish ``k@3`` after ``k@5``.
    """
    kept: list[T] = []
    dropped: list[T] = []
    for item in pending:
        c = candidate(item)
        if c is not None and c.version <= delivered.get(c.field, -1):
            dropped.append(item)
        else:
            kept.append(item)
    return kept, dropped


def latest_only(
    pending: Sequence[T], candidate: Callable[[T], Candidate | None]
) -> tuple[list[T], list[T]]:
    """``pending`` split into (sent again, superseded by a newer version of its key in it).

    For a batch resent after an uncertain answer: any part of it may have been
    published, so only the newest version of each key in it goes out again.
    """
    candidates = [candidate(item) for item in pending]
    stale = supersede([None if c is None else attrs.evolve(c, latest=True) for c in candidates], {})
    kept = [item for item, s in zip(pending, stale, strict=True) if not s]
    dropped = [item for item, s in zip(pending, stale, strict=True) if s]
    return kept, dropped


def newest(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The highest version per field among ``pairs``."""
    found: dict[str, int] = {}
    for field, version in pairs:
        if version > found.get(field, -1):
            found[field] = version
    return found


class KeyVersion(msgspec.Struct):
    """The few envelope fields a look at the queue needs (the rest is skipped unread)."""

    channel: str
    key: str
    version: int
    ttl_ms: int | None = None


_key_version = msgspec.json.Decoder(KeyVersion)


def decode_key_version(raw: bytes | str) -> KeyVersion | None:
    """Channel, key and version of a queued entry; None if it is not an envelope."""
    try:
        return _key_version.decode(raw)
    except msgspec.DecodeError:
        return None
