"""Per-key version gate: apply an update only when it is newer than what the app has.

Centrifugo delivers at least once across reconnects (recovery replays, relay
retries outside the idempotency window) and the app's own snapshot may already
contain an update that is also delivered live. The gate keeps the newest version
seen per key and tells, for every envelope, whether it is new, newer, a duplicate
or stale.

A delete (an envelope with ``deleted``) is decided like an update: when it is
newer, the gate records a *tombstone*, the key's version with a "deleted" mark, so
an older update of the deleted object that arrives later is dropped as stale
instead of bringing the object back.

Memory is bounded: at most ``max_keys`` keys (tombstones included) are remembered,
least recently used ones forgotten first. A forgotten key goes into a small Bloom
filter, and an update for a key the filter may contain is dropped with reason
``"evicted"``: the gate no longer knows which version the app holds, so the app
must reload that object (``SyncedSubscription.reload_key``). A Bloom filter false
positive only costs such a reload; an evicted key is never let through silently.

The JavaScript twin implements the same rules; keep both in step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Final, Literal, NamedTuple

import attrs

from ..protocol.envelope import MAX_OBJECT_VERSION, Envelope
from ..protocol.routing import fnv1a_32

__all__ = ["Decision", "DecisionReason", "GateStats", "Known", "VersionGate"]

DecisionReason = Literal["new", "newer", "stale", "duplicate", "evicted"]


@attrs.frozen
class Decision:
    """What the gate decided for one update.

    ``accepted`` is True for ``"new"`` (first version seen of the key) and
    ``"newer"``; the update (or delete) was recorded. The other reasons drop it:
    ``"duplicate"`` (same version again), ``"stale"`` (older than the known one)
    and ``"evicted"`` (the key was forgotten to bound memory: reload it).
    """

    accepted: bool
    reason: DecisionReason


NEW: Final = Decision(True, "new")
NEWER: Final = Decision(True, "newer")
STALE: Final = Decision(False, "stale")
DUPLICATE: Final = Decision(False, "duplicate")
EVICTED: Final = Decision(False, "evicted")


class Known(NamedTuple):
    """What the gate remembers of one key: its newest version, and whether that
    version is a delete (a tombstone)."""

    version: int
    deleted: bool


@attrs.frozen
class GateStats:
    """Counters of a gate.

    ``size`` is the number of keys remembered now (tombstones included);
    ``accepted`` counts ``"new"`` + ``"newer"`` decisions (deletes included) and the
    others count drops by reason. The counters cover the gate's whole life
    (``reset()`` keeps them).
    """

    size: int
    accepted: int
    stale: int
    duplicate: int
    evicted: int


_BLOOM_HASHES: Final = 3


class _EvictedKeys:
    """A Bloom filter of forgotten keys: ``m`` bits, 3 positions per key.

    Positions are ``(h1 + i * h2) mod m`` for ``i`` in 0..2 (double hashing), with
    ``h1 = fnv1a_32(utf8(key))`` and ``h2 = rotl32(h1, 16) | 1``: the rotation brings
    the well-mixed high bits of FNV-1a down to where ``mod m`` reads them. The
    JavaScript twin computes the same positions (``bloomPositions``).
    """

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._array = bytearray((bits + 7) // 8)
        self.empty = True

    def positions(self, key: str) -> list[int]:
        h1 = fnv1a_32(key.encode("utf-8"))
        h2 = ((h1 >> 16) | (h1 << 16) & 0xFFFFFFFF) | 1
        return [(h1 + i * h2) % self._bits for i in range(_BLOOM_HASHES)]

    def add(self, key: str) -> None:
        for pos in self.positions(key):
            self._array[pos >> 3] |= 1 << (pos & 7)
        self.empty = False

    def might_contain(self, key: str) -> bool:
        if self.empty:
            return False
        return all(self._array[pos >> 3] & (1 << (pos & 7)) for pos in self.positions(key))

    def clear(self) -> None:
        self._array = bytearray(len(self._array))
        self.empty = True


def _check_version(version: int) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be an int, not {type(version).__name__}")
    if not 0 <= version <= MAX_OBJECT_VERSION:
        raise ValueError(f"version {version} is outside 0..2**53-1")


class VersionGate:
    """Remembers the newest version per key and decides which updates to apply.

    Recording a version (``seed``, or an accepted update or delete) makes the key
    the most recently used; a dropped update does not. Not thread-safe: use it
    from one event loop/thread.

    Examples:
        >>> gate = VersionGate()
        >>> gate.seed("doc:1", 3)
        True
        >>> gate.check("doc:1", 4)
        Decision(accepted=True, reason='newer')
        >>> gate.check("doc:1", 4)
        Decision(accepted=False, reason='duplicate')
        >>> gate.check("doc:1", 5, deleted=True)
        Decision(accepted=True, reason='newer')
        >>> gate.check("doc:1", 4).reason, gate.is_deleted("doc:1")
        ('stale', True)
    """

    def __init__(self, max_keys: int = 10_000, evicted_filter_bits: int = 1 << 16) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        if evicted_filter_bits < 1:
            raise ValueError("evicted_filter_bits must be >= 1")
        self.max_keys = max_keys
        """The most keys remembered; the least recently used are forgotten beyond it."""
        self._known: OrderedDict[str, Known] = OrderedDict()
        self._evicted = _EvictedKeys(evicted_filter_bits)
        self._accepted = 0
        self._stale = 0
        self._duplicate = 0
        self._evicted_drops = 0

    def seed(self, key: str, version: int, *, deleted: bool = False) -> bool:
        """Record that the app holds ``version`` of ``key`` (a tombstone if ``deleted``).

        Keeps the larger of the known and the given version, so seeding never moves
        a key backwards, and marks the key most recently used. Returns True when it
        advanced: the key was unknown (or forgotten) or known at an older version;
        False when the gate already holds this version or a newer one, i.e. what was
        loaded is not newer than what the app holds and must not be applied.
        """
        _check_version(version)
        known = self._known.get(key)
        if known is not None and version <= known.version:
            self._known.move_to_end(key)
            return False
        self._record(key, Known(version, deleted))
        return True

    def check(self, key: str, version: int, *, deleted: bool = False) -> Decision:
        """Decide for an update (or, with ``deleted``, a delete) of ``key`` at
        ``version``, and record it if accepted."""
        _check_version(version)
        known = self._known.get(key)
        if known is None:
            if self._evicted.might_contain(key):
                self._evicted_drops += 1
                return EVICTED
            self._record(key, Known(version, deleted))
            self._accepted += 1
            return NEW
        if version > known.version:
            self._record(key, Known(version, deleted))
            self._accepted += 1
            return NEWER
        if version == known.version:
            self._duplicate += 1
            return DUPLICATE
        self._stale += 1
        return STALE

    def accept(self, envelope: Envelope[Any]) -> Decision:
        """``check(envelope.key, envelope.version, deleted=envelope.deleted)``."""
        return self.check(envelope.key, envelope.version, deleted=envelope.deleted)

    def version(self, key: str) -> int | None:
        """The known version of ``key`` (a tombstone's too), or None (never seen, or
        evicted). Not a use."""
        known = self._known.get(key)
        return None if known is None else known.version

    def is_deleted(self, key: str) -> bool:
        """True when the gate holds a tombstone for ``key``: its newest known version
        is a delete. Not a use."""
        known = self._known.get(key)
        return known is not None and known.deleted

    def forget(self, key: str) -> None:
        """Forget ``key`` as if it had been evicted: its updates are dropped as
        ``"evicted"`` until it is seeded again.

        For an object that is gone at a version nobody knows (a reload found it
        absent): any later update of it may be older than the delete, so it must be
        checked against the backend instead of being taken as new.
        """
        self._known.pop(key, None)
        self._evicted.add(key)

    def replace(self, snapshot: Iterable[tuple[str, int, bool]]) -> None:
        """Adopt a full snapshot: ``(key, version, deleted)`` for every object the app
        now holds (and any tombstones the backend reported).

        The snapshot is the truth for the keys it lists (their versions are set,
        not maxed: the app's store now holds exactly these). A key the gate knew
        that the snapshot lacks is gone: it becomes a tombstone at its known
        version, so an older update of it arriving later is dropped as stale
        instead of bringing it back. The evicted-keys filter is kept: a forgotten
        key may be a deleted one, and its late updates must not pass as new.
        """
        entries: dict[str, Known] = {}
        for key, version, deleted in snapshot:
            _check_version(version)
            known = entries.get(key)
            if known is None or version > known.version:
                entries[key] = Known(version, bool(deleted))
        previous = self._known
        self._known = OrderedDict(
            (key, known if known.deleted else Known(known.version, True))
            for key, known in previous.items()
            if key not in entries
        )
        for key, known in entries.items():
            self._record(key, known)

    def reset(self) -> None:
        """Forget every key, tombstones included, and the evicted-keys filter."""
        self._known.clear()
        self._evicted.clear()

    def stats(self) -> GateStats:
        """The gate's counters and its current size (see ``GateStats``)."""
        return GateStats(
            size=len(self._known),
            accepted=self._accepted,
            stale=self._stale,
            duplicate=self._duplicate,
            evicted=self._evicted_drops,
        )

    def __len__(self) -> int:
        return len(self._known)

    def _record(self, key: str, known: Known) -> None:
        self._known[key] = known
        self._known.move_to_end(key)
        while len(self._known) > self.max_keys:
            oldest, _ = self._known.popitem(last=False)
            self._evicted.add(oldest)
