"""Redis clients from a URL, for a single Redis or a Redis Cluster.

Every multi-key script touches only the keys of one shard, which share a hash
tag and therefore a slot, so the same code runs on both; only the client class
differs.
"""

from __future__ import annotations

from typing import TypeAlias

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

__all__ = ["AsyncRedisClient", "SyncRedisClient", "async_client", "sync_client"]

SyncRedisClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncRedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"


def sync_client(url: str, *, cluster: bool = False) -> SyncRedisClient:
    if cluster:
        return redis.cluster.RedisCluster.from_url(url)
    return redis.Redis.from_url(url)


def async_client(url: str, *, cluster: bool = False) -> AsyncRedisClient:
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(url)
    return redis.asyncio.Redis.from_url(url)
