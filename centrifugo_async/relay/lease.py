"""Shard leases: at most one relay consumes a shard at a time.

A lease is a Redis string ``{prefix:N}:lease`` holding the owner's relay id with
a TTL. The ``LeaseKeeper`` renews the leases it holds and takes free ones every
``ttl / 3``; a relay that finds a lease held by someone else stands by for that
shard. The claim and ack scripts re-check the owner atomically (fencing), and a
worker sends a batch only while its locally known lease still has at least
``ttl / 3`` to run, counted from *before* the renewal was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio
import redis.exceptions

from ..keys import Keyspace
from ..scripts import LEASE_ACQUIRE, LEASE_RELEASE
from .backoff import wait_for_event

__all__ = ["LeaseKeeper"]

log = logging.getLogger("centrifugo_async.relay")


class LeaseKeeper:
    def __init__(
        self, client: redis.asyncio.Redis, keyspace: Keyspace, owner: str, ttl: float
    ) -> None:
        self._redis = client
        self._keyspace = keyspace
        self.owner = owner
        self.ttl = ttl
        self._valid_until = [0.0] * keyspace.shards
        self._acquired = [asyncio.Event() for _ in range(keyspace.shards)]
        self._acquire = client.register_script(LEASE_ACQUIRE.source)
        self._release = client.register_script(LEASE_RELEASE.source)

    def holds(self, shard: int) -> bool:
        """True while the lease is ours with at least a third of its TTL left."""
        return time.monotonic() + self.ttl / 3 < self._valid_until[shard]

    def held_shards(self) -> list[int]:
        return [s for s in range(self._keyspace.shards) if self.holds(s)]

    def lost(self, shard: int) -> None:
        """Forget a lease the fenced scripts reported as someone else's."""
        if self._valid_until[shard]:
            log.warning("lease lost shard=%d relay=%s", shard, self.owner)
        self._valid_until[shard] = 0.0
        self._acquired[shard].clear()

    async def wait_acquired(self, shard: int, seconds: float) -> None:
        await wait_for_event(self._acquired[shard], seconds)

    async def tick(self) -> None:
        """Renew held leases and try to take free ones, in one round trip."""
        started = time.monotonic()
        ttl_ms = int(self.ttl * 1000)
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keyspace.all_shards():
            await self._acquire(keys=[keys.lease], args=[self.owner, ttl_ms], client=pipe)
        results = await pipe.execute()
        for shard, ok in enumerate(results):
            if ok:
                if not self._valid_until[shard]:
                    log.info("lease acquired shard=%d relay=%s", shard, self.owner)
                self._valid_until[shard] = started + self.ttl
                self._acquired[shard].set()
            else:
                self.lost(shard)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except redis.exceptions.RedisError as exc:
                log.warning("lease renewal failed relay=%s error=%s", self.owner, exc)
            await wait_for_event(stop, self.ttl / 3)

    async def release_all(self) -> None:
        """Hand our leases back so a standby relay can take over at once."""
        held = [s for s in range(self._keyspace.shards) if self._valid_until[s]]
        for shard in held:
            self._valid_until[shard] = 0.0
            try:
                await self._release(keys=[self._keyspace.shard(shard).lease], args=[self.owner])
            except redis.exceptions.RedisError as exc:
                log.warning("lease release failed shard=%d error=%s", shard, exc)
