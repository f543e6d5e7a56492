"""Every Redis key name the publisher and relay use, in one place.

All keys of one shard share the Redis Cluster hash tag ``{<prefix>:<shard>}`` so
the scripts that touch several of them stay within one hash slot::

    {centrifugo.publish}:meta          hash: shards, created_ms (the topology)
    {centrifugo.publish}:relays        sorted set: live relay ids scored by heartbeat expiry (ms)
    {centrifugo.publish:3}:queue       list: envelopes waiting to be relayed
    {centrifugo.publish:3}:inflight    list: envelopes taken by the relay, not yet accepted
    {centrifugo.publish:3}:state       hash: seq, shards, delivered, expired, dead_lettered,
                                       lease_epoch, lease_since_ms
    {centrifugo.publish:3}:lease       string: "relay-id#epoch" of the owner (with TTL)
    {centrifugo.publish:3}:bell        list: wake-up token pushed when the queue stops being empty
    {centrifugo.publish:3}:dlq         list: dead letters (JSON records) of that shard
    {centrifugo.publish:3}:versions    hash: (channel, key) -> last version the relay delivered
    {centrifugo.publish:3}:versions:old  hash: the generation before (see scripts.ACK)
"""

from __future__ import annotations

import attrs

from .routing import MAX_SHARDS
from .topology import meta_key

__all__ = ["DEFAULT_PREFIX", "Keyspace", "ShardKeys", "prefix_problem"]

DEFAULT_PREFIX = "centrifugo.publish"


@attrs.frozen
class ShardKeys:
    """The key names of one shard."""

    shard: int
    queue: str
    inflight: str
    state: str
    lease: str
    bell: str
    dlq: str
    versions: str
    """The relay's memory for monotonic delivery: the current generation."""
    versions_old: str
    """The generation before; both are read, only the current one is written."""


def prefix_problem(prefix: str) -> str | None:
    """What is wrong with ``prefix`` as a key prefix, or None if it is fine."""
    if not prefix or any(c in prefix for c in "{}") or prefix != prefix.strip():
        return (
            "must be non-empty, without braces or surrounding spaces (braces would "
            "break the Redis Cluster hash tags)"
        )
    return None


def _check_prefix(_: object, __: attrs.Attribute[str], prefix: str) -> None:
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"invalid prefix {prefix!r}: it {problem}")


def _check_shards(_: object, __: attrs.Attribute[int], shards: int) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"invalid shard count {shards!r}: it must be an integer 1..{MAX_SHARDS}")


@attrs.frozen
class Keyspace:
    """Key names for one ``prefix`` and shard count."""

    prefix: str = attrs.field(default=DEFAULT_PREFIX, validator=_check_prefix)
    shards: int = attrs.field(default=16, validator=_check_shards)
    _shard_keys: tuple[ShardKeys, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_shard_keys", tuple(map(self._build, range(self.shards))))

    @property
    def meta(self) -> str:
        """The hash recording the shard count of this prefix (see ``topology``)."""
        return meta_key(self.prefix)

    @property
    def relays(self) -> str:
        """The sorted set of live relays (the relay group)."""
        return f"{{{self.prefix}}}:relays"

    def shard(self, index: int) -> ShardKeys:
        """The key names of shard ``index``."""
        return self._shard_keys[index]

    def all_shards(self) -> tuple[ShardKeys, ...]:
        """The key names of every shard, in index order."""
        return self._shard_keys

    def _build(self, index: int) -> ShardKeys:
        tag = f"{{{self.prefix}:{index}}}"
        return ShardKeys(
            shard=index,
            queue=f"{tag}:queue",
            inflight=f"{tag}:inflight",
            state=f"{tag}:state",
            lease=f"{tag}:lease",
            bell=f"{tag}:bell",
            dlq=f"{tag}:dlq",
            versions=f"{tag}:versions",
            versions_old=f"{tag}:versions:old",
        )
