"""The recorded shard count of a prefix: the one number every role must agree on.

Publishers route keys with it, relays consume its shards and a reshard changes it.
A process configured with another count would route a key to another list and
break its order, so everyone checks against the count recorded in Redis::

    {<prefix>}:meta    hash: shards, created_ms, resharded_ms

The first publisher (or a relay started with ``--shards``) records the count;
everyone after checks against it. The pure functions judge what Redis replied;
the small sync and async helpers below run the one command each needs, and leave
Redis errors to their callers, which know how to report them.
"""

from __future__ import annotations

import asyncio

import redis.exceptions

from .._clock import now_ms
from .._retry import wait_for_event
from ..connection import AsyncRedisClient, SyncRedisClient
from ..exceptions import TopologyMismatch, TopologyNotRecorded
from .scripts import RECORD_TOPOLOGY

__all__ = [
    "check_shards",
    "meta_key",
    "parse_shards",
    "read_shards",
    "read_shards_async",
    "record_shards",
    "record_shards_async",
    "require_shards",
    "switch_shards",
    "watch_shards",
]


def meta_key(prefix: str) -> str:
    """The hash that records the shard count of ``prefix``."""
    return f"{{{prefix}}}:meta"


def parse_shards(recorded: object) -> int | None:
    """The shard count in an ``HGET`` or script reply, None if nothing is recorded."""
    if recorded is None:
        return None
    value = recorded.decode() if isinstance(recorded, bytes) else str(recorded)
    return int(value)


def check_shards(recorded: object, *, prefix: str, expected: int) -> int:
    """Return the recorded count; raise ``TopologyMismatch`` if it is not ``expected``."""
    shards = parse_shards(recorded)
    if shards is None:
        raise TopologyNotRecorded(_nothing_recorded(prefix))
    if shards != expected:
        raise TopologyMismatch(
            f"prefix {prefix!r} is recorded in Redis with shards={shards}, but "
            f"this process is configured with shards={expected}; routing with a "
            "different count would reorder keys. Use the recorded count, or follow the "
            "resharding procedure in docs/scaling.md."
        )
    return shards


def _record_args(prefix: str, shards: int) -> tuple[str, int, str, int, int]:
    return (RECORD_TOPOLOGY.source, 1, meta_key(prefix), shards, now_ms())


def _nothing_recorded(prefix: str) -> str:
    return (
        f"nothing is recorded for prefix {prefix!r} in this Redis: no publisher or "
        "relay has used it yet (check --redis-url and --prefix)"
    )


def read_shards(client: SyncRedisClient, prefix: str) -> int | None:
    """The recorded count of ``prefix``, None if no one has recorded one yet."""
    return parse_shards(client.hget(meta_key(prefix), "shards"))


def require_shards(client: SyncRedisClient, prefix: str) -> int:
    """The recorded count of ``prefix``; raises ``TopologyNotRecorded`` without one."""
    shards = read_shards(client, prefix)
    if shards is None:
        raise TopologyNotRecorded(_nothing_recorded(prefix))
    return shards


def record_shards(client: SyncRedisClient, prefix: str, shards: int) -> int:
    """Record ``shards`` unless a count is recorded already, then check it (first wins)."""
    recorded = client.eval(*_record_args(prefix, shards))
    return check_shards(recorded, prefix=prefix, expected=shards)


def switch_shards(client: SyncRedisClient, prefix: str, shards: int) -> None:
    """Record a new count: the last step of a reshard, once every shard is sealed."""
    client.hset(meta_key(prefix), mapping={"shards": shards, "resharded_ms": now_ms()})


async def read_shards_async(client: AsyncRedisClient, prefix: str) -> int | None:
    """The async twin of ``read_shards``."""
    return parse_shards(await client.hget(meta_key(prefix), "shards"))


async def record_shards_async(client: AsyncRedisClient, prefix: str, shards: int) -> int:
    """The async twin of ``record_shards``."""
    recorded = await client.eval(*_record_args(prefix, shards))
    return check_shards(recorded, prefix=prefix, expected=shards)


async def watch_shards(
    client: AsyncRedisClient,
    prefix: str,
    shards: int,
    *,
    interval: float,
    until: asyncio.Event,
) -> bool:
    """Poll until the recorded count differs from ``shards`` (True) or ``until`` is set.

    Redis errors are skipped: a relay that cannot reach Redis learns nothing new
    about the topology, and its workers report the outage themselves.
    """
    while not until.is_set():
        if await wait_for_event(until, interval):
            return False
        try:
            recorded = await read_shards_async(client, prefix)
        except redis.exceptions.RedisError:
            continue
        if recorded is not None and recorded != shards:
            return True
    return False
