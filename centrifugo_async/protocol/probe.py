"""What a shard holds right now: the Redis reads planned once, without I/O.

``centrifugo-async stats`` (synchronous, ``admin``) and the relay's health
sampler (asyncio, ``relay.health``) ask Redis the same questions about a shard:
how long are its lists, how old is the oldest waiting message, what do its
counters and its lease say. A ``ProbePlan`` lists those commands for a set of
shards and turns the raw replies into value objects, so the two twins differ
only in how they run one pipeline::

    probe = plan_depths(keyspace, shards)
    pipe = client.pipeline(transaction=False)
    for command in probe.commands:
        pipe.execute_command(*command)
    depths = probe.read(pipe.execute())

The replies are read as redis-py hands them over (``LLEN`` and ``PTTL`` as
ints, ``HMGET`` as a list), with or without ``decode_responses``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

import attrs

from ..exceptions import EnvelopeDecodeError
from .envelope import decode_envelope
from .keys import Keyspace, ShardKeys

__all__ = [
    "Command",
    "ProbePlan",
    "ShardDepth",
    "ShardLease",
    "ShardStatus",
    "plan_depths",
    "plan_status",
]

Command: TypeAlias = tuple[str | int, ...]
"""One Redis command, name first, as ``execute_command`` takes it."""

T = TypeVar("T")

_COUNTERS = ("seq", "delivered", "expired", "dead_lettered", "lease_since_ms", "superseded")
"""The fields of a shard's state hash the status reads, in ``HMGET`` order."""


@attrs.frozen
class ShardDepth:
    """How much one shard holds, and since when."""

    shard: int
    queued: int
    in_flight: int
    oldest_ts: int | None
    """``ts`` of the oldest waiting message: the head of the in-flight list, else of
    the queue. None when both are empty or the head is not a readable envelope."""

    def oldest_age_ms(self, now_ms: int) -> int | None:
        """How long the oldest message has waited at ``now_ms`` (never negative)."""
        return None if self.oldest_ts is None else max(0, now_ms - self.oldest_ts)


@attrs.frozen
class ShardLease:
    """The lease of a shard that some relay holds."""

    owner: str | None
    """Relay id of the holder (None if the lease value names none)."""
    epoch: int | None
    """Fencing epoch of the lease (grows with every takeover)."""
    since_ms: int | None
    """When the holder acquired it (the state hash's ``lease_since_ms``)."""
    ttl_ms: int | None
    """Time left before it expires unless renewed (None: no expiry set)."""

    def age_ms(self, now_ms: int) -> int | None:
        """Time since the holder acquired the lease, at ``now_ms``."""
        return None if self.since_ms is None else now_ms - self.since_ms


@attrs.frozen
class ShardStatus:
    """Everything an operator sees of one shard: depth, dead letters, counters, lease."""

    depth: ShardDepth
    dead_letters: int
    seq: int
    """The last ``seq`` assigned by the enqueue script."""
    delivered: int
    expired: int
    dead_lettered: int
    lease: ShardLease | None
    """None while no relay holds the shard."""
    superseded: int = 0
    """Messages not sent because a newer version of their key was delivered or in hand."""


@attrs.frozen
class ProbePlan(Generic[T]):
    """The commands that probe some shards, and how to read their replies.

    Every shard gets the same commands, shard after shard, so the replies of a
    pipeline that ran ``commands`` split evenly back into one value per shard.
    """

    shards: tuple[ShardKeys, ...]
    commands: tuple[Command, ...]
    _reader: Callable[[ShardKeys, Sequence[Any]], T]

    def read(self, replies: Sequence[Any]) -> list[T]:
        """One value per planned shard, in plan order, from the pipeline's replies."""
        if len(replies) != len(self.commands):
            raise ValueError(f"expected {len(self.commands)} replies, got {len(replies)}")
        if not self.shards:
            return []
        step = len(self.commands) // len(self.shards)
        return [
            self._reader(keys, replies[i * step : (i + 1) * step])
            for i, keys in enumerate(self.shards)
        ]


def plan_depths(keyspace: Keyspace, shards: Iterable[int]) -> ProbePlan[ShardDepth]:
    """Queued, in flight and the oldest waiting message of ``shards`` (the relay's gauges)."""
    chosen = tuple(keyspace.shard(shard) for shard in shards)
    commands = tuple(command for keys in chosen for command in _depth_commands(keys))
    return ProbePlan(chosen, commands, _read_depth)


def plan_status(keyspace: Keyspace) -> ProbePlan[ShardStatus]:
    """The full status of every shard (what ``centrifugo-async stats`` shows)."""
    chosen = keyspace.all_shards()
    commands = tuple(command for keys in chosen for command in _status_commands(keys))
    return ProbePlan(chosen, commands, _read_status)


def _depth_commands(keys: ShardKeys) -> list[Command]:
    return [
        ("LLEN", keys.queue),
        ("LLEN", keys.inflight),
        ("LINDEX", keys.inflight, 0),
        ("LINDEX", keys.queue, 0),
    ]


def _status_commands(keys: ShardKeys) -> list[Command]:
    return [
        *_depth_commands(keys),
        ("LLEN", keys.dlq),
        ("HMGET", keys.state, *_COUNTERS),
        ("GET", keys.lease),
        ("PTTL", keys.lease),
    ]


def _read_depth(keys: ShardKeys, replies: Sequence[Any]) -> ShardDepth:
    queued, in_flight, head_in_flight, head_queued = replies
    return ShardDepth(
        shard=keys.shard,
        queued=int(queued),
        in_flight=int(in_flight),
        oldest_ts=_ts(head_in_flight or head_queued),
    )


def _read_status(keys: ShardKeys, replies: Sequence[Any]) -> ShardStatus:
    depth = _read_depth(keys, replies[:4])
    dead_letters, counters, lease_value, ttl_ms = replies[4:]
    seq, delivered, expired, dead_lettered, since_ms, superseded = (_int(raw) for raw in counters)
    return ShardStatus(
        depth=depth,
        dead_letters=int(dead_letters),
        seq=seq,
        delivered=delivered,
        expired=expired,
        dead_lettered=dead_lettered,
        lease=_lease(lease_value, since_ms, int(ttl_ms)),
        superseded=superseded,
    )


def _lease(value: bytes | str | None, since_ms: int, ttl_ms: int) -> ShardLease | None:
    """Parse ``"<relay id>#<epoch>"``; relay ids may contain ``#`` themselves."""
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    owner, _, epoch = text.rpartition("#")
    return ShardLease(
        owner=owner or None,
        epoch=int(epoch) if epoch.isascii() and epoch.isdigit() else None,
        since_ms=since_ms or None,
        ttl_ms=ttl_ms if ttl_ms >= 0 else None,
    )


def _int(raw: bytes | str | None) -> int:
    return int(raw) if raw is not None else 0


def _ts(raw: bytes | str | None) -> int | None:
    if raw is None:
        return None
    try:
        return decode_envelope(raw).ts
    except EnvelopeDecodeError:
        return None
