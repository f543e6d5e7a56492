"""Shard leases shared fairly by a group of relays, with fencing epochs.

Every relay heartbeats into ``{prefix}:relays``; the live members, sorted, give
each relay its fair share of the shards (``shards // n``, plus one for the first
``shards % n``). The ``LeaseKeeper`` of each relay, every ``ttl / 3``:

1. renews the leases it holds,
2. asks its workers to hand back leases beyond its share (after the batch in flight),
3. takes free leases up to its share, its "preferred" shards (``i % n == rank``) first.

A lease value is ``"<relay id>#<epoch>"``; the epoch comes from the shard's state
hash and grows with every acquisition. The claim and ack scripts compare the
whole value, so a relay that lost its lease (paused past the TTL, say) cannot
move or remove a message even if it later wins the same shard again: its old
batch carries the old epoch. Before each send the worker also checks, locally,
that at least a third of the TTL is left, counted from before the renewal was
sent. What remains is documented in docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.exceptions

from .._clock import now_ms
from .._retry import wait_for_event
from ..connection import AsyncRedisClient
from ..protocol.keys import Keyspace
from ..protocol.scripts import LEASE_ACQUIRE, LEASE_RELEASE

__all__ = ["LeaseKeeper", "fair_share"]

log = logging.getLogger("centrifugo_async.relay")


def fair_share(shards: int, members: list[str], me: str) -> int:
    """How many shards ``me`` should own among ``members`` (sorted, including ``me``)."""
    if me not in members:
        members = sorted([*members, me])
    rank = members.index(me)
    base, extra = divmod(shards, len(members))
    return base + (1 if rank < extra else 0)


class LeaseKeeper:
    def __init__(
        self, client: AsyncRedisClient, keyspace: Keyspace, owner: str, ttl: float
    ) -> None:
        self._redis = client
        self._keyspace = keyspace
        self.owner = owner
        self.ttl = ttl
        shards = keyspace.shards
        self._values: list[str | None] = [None] * shards
        self._valid_until = [0.0] * shards
        self._releasing = [False] * shards
        self._acquired = [asyncio.Event() for _ in range(shards)]
        self._acquire = client.register_script(LEASE_ACQUIRE.source)
        self._release = client.register_script(LEASE_RELEASE.source)
        self.members: list[str] = [owner]

    # What workers ask.

    def value(self, shard: int) -> str | None:
        """The lease value to fence with, while at least a third of the TTL is left."""
        if time.monotonic() + self.ttl / 3 < self._valid_until[shard]:
            return self._values[shard]
        return None

    def holds(self, shard: int) -> bool:
        return self.value(shard) is not None

    def held_shards(self) -> list[int]:
        return [s for s in range(self._keyspace.shards) if self.holds(s)]

    def should_release(self, shard: int) -> bool:
        return self._releasing[shard]

    async def wait_acquired(self, shard: int, seconds: float) -> None:
        await wait_for_event(self._acquired[shard], seconds)

    def lost(self, shard: int) -> None:
        """Forget a lease the fenced scripts reported as no longer ours."""
        if self._values[shard] is not None:
            log.warning("lease lost shard=%d relay=%s", shard, self.owner)
        self._forget(shard)

    async def release(self, shard: int) -> None:
        """Hand a lease back (the worker calls this between batches)."""
        value = self._values[shard]
        self._forget(shard)
        if value is None:
            return
        try:
            await self._release(keys=[self._keyspace.shard(shard).lease], args=[value])
            log.info("lease released shard=%d relay=%s", shard, self.owner)
        except redis.exceptions.RedisError as exc:
            log.warning("lease release failed shard=%d error=%s", shard, exc)

    def _forget(self, shard: int) -> None:
        self._values[shard] = None
        self._valid_until[shard] = 0.0
        self._releasing[shard] = False
        self._acquired[shard].clear()

    # The keeper's own loop.

    async def tick(self) -> None:
        """Heartbeat, renew, mark the excess for release, take free shards."""
        self.members = await self._heartbeat()
        shards = self._keyspace.shards
        target = fair_share(shards, self.members, self.owner)
        for shard in range(shards):
            if self._values[shard] is not None:
                await self._renew_or_take(shard, may_acquire=False)
        held = [s for s in range(shards) if self._values[s] is not None]
        keep = sorted(held, key=self._preference)[:target]
        for shard in held:
            if shard not in keep and not self._releasing[shard]:
                log.info("handing over shard=%d relay=%s share=%d", shard, self.owner, target)
                self._releasing[shard] = True
        missing = target - len(held)
        if missing > 0:
            for shard in sorted(set(range(shards)) - set(held), key=self._preference):
                if await self._renew_or_take(shard, may_acquire=True):
                    missing -= 1
                    if missing == 0:
                        break

    def _preference(self, shard: int) -> tuple[bool, int]:
        """Own "preferred" shards (``shard % n == rank``) first, so groups settle stably."""
        members = self.members if self.owner in self.members else [*self.members, self.owner]
        members = sorted(members)
        preferred = shard % len(members) == members.index(self.owner)
        return (not preferred, shard)

    async def _heartbeat(self) -> list[str]:
        beat_ms = now_ms()
        pipe = self._redis.pipeline(transaction=False)
        key = self._keyspace.relays
        pipe.zadd(key, {self.owner: beat_ms + int(self.ttl * 1000)})
        pipe.zremrangebyscore(key, "-inf", beat_ms)
        pipe.zrange(key, 0, -1)
        *_, members = await pipe.execute()
        return sorted(m.decode() for m in members)

    async def _renew_or_take(self, shard: int, *, may_acquire: bool) -> bool:
        keys = self._keyspace.shard(shard)
        started = time.monotonic()
        held = self._values[shard] or ""
        value = await self._acquire(
            keys=[keys.lease, keys.state],
            args=[
                self.owner,
                int(self.ttl * 1000),
                held,
                now_ms(),
                "1" if may_acquire else "0",
            ],
        )
        if value is None:
            if held:
                self.lost(shard)
            return False
        value = value.decode()
        if not held:
            log.info("lease acquired shard=%d relay=%s lease=%s", shard, self.owner, value)
        self._values[shard] = value
        self._valid_until[shard] = started + self.ttl
        self._acquired[shard].set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except redis.exceptions.RedisError as exc:
                log.warning("lease renewal failed relay=%s error=%s", self.owner, exc)
            await wait_for_event(stop, self.ttl / 3)

    async def release_all(self) -> None:
        """Hand every lease back and leave the group, so others take over at once."""
        for shard in range(self._keyspace.shards):
            await self.release(shard)
        try:
            await self._redis.zrem(self._keyspace.relays, self.owner)
        except redis.exceptions.RedisError as exc:
            log.warning("leaving the relay group failed error=%s", exc)
