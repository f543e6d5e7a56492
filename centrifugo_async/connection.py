"""Redis clients from a URL, for a single Redis or a Redis Cluster.

Every multi-key script touches only the keys of one shard, which share a hash
tag and therefore a slot, so the same code runs on both; only the client class
differs.

A client built with a ``timeout`` gives up on connecting and on each reply after
that many seconds, and does not retry by itself (redis-py 6 and later retry a
timed-out command up to 10 times by default, so "5 s" would become a minute).
The publisher and the operator tools use ``DEFAULT_TIMEOUT``: a hung Redis must
turn into ``QueueUnavailable`` for the caller to handle, never a call that blocks
forever. A cluster client keeps its own retries over the other nodes (failover
needs them), so one call may take a few timeouts there.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.backoff
import redis.cluster
import redis.retry

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncRedisClient",
    "SyncRedisClient",
    "async_client",
    "sync_client",
]

SyncRedisClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncRedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds to connect and to wait for each reply, for publishers and operator tools."""


def sync_client(
    url: str, *, cluster: bool = False, timeout: float | None = None
) -> SyncRedisClient:
    """A client for ``url``; ``timeout`` as described above, None for redis-py's defaults."""
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **_socket_bounds(timeout))
    options = _socket_bounds(timeout)
    if timeout is not None:
        options["retry"] = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    return redis.Redis.from_url(url, **options)


def async_client(
    url: str, *, cluster: bool = False, timeout: float | None = None
) -> AsyncRedisClient:
    """The asyncio twin of ``sync_client``."""
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(url, **_socket_bounds(timeout))
    options = _socket_bounds(timeout)
    if timeout is not None:
        options["retry"] = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
    return redis.asyncio.Redis.from_url(url, **options)


def _socket_bounds(timeout: float | None) -> dict[str, Any]:
    if timeout is None:
        return {}
    if not timeout > 0 or timeout == float("inf"):
        raise ValueError(f"the Redis timeout must be a positive number of seconds, got {timeout!r}")
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}
