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

Renewals, the heartbeat and taking a free lease keep working when Redis is at
``maxmemory`` (their scripts never grow memory, see ``protocol.scripts``), so a
full Redis does not cost the relay its shards while it drains them. Only
joining the group for the first time is refused then; the relay still takes
its share, counting itself, and joins once Redis has room.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.exceptions

from .._clock import now_ms
from .._retry import Backoff, wait_for_event
from ..connection import AsyncRedisClient
from ..protocol.keys import Keyspace
from ..protocol.scripts import HEARTBEAT, LEASE_ACQUIRE, LEASE_RELEASE
from .supervision import supervise

__all__ = ["RELEASE_TIMEOUT", "LeaseKeeper", "fair_share"]

log = logging.getLogger("centrifugo_async.relay")

RELEASE_TIMEOUT = 2.0
"""Seconds ``release_all`` may take; leases it could not release expire by their TTL."""


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
        self._heartbeat_script = client.register_script(HEARTBEAT.source)
        self._join_refused = False
        self.members: list[str] = [owner]
        self.ticked = asyncio.Event()
        """Set once the first round of renewals and acquisitions ended (well or not)."""

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
        """Wait up to ``seconds`` for the next renewal or acquisition of ``shard``.

        Only a renewal from now on counts: a lease that is held but too close to
        its expiry to use (renewals failing) must not wake the worker at once,
        again and again, for as long as Redis does not answer.
        """
        self._acquired[shard].clear()
        await wait_for_event(self._acquired[shard], seconds)

    def lost(self, shard: int) -> None:
        """Forget a lease the fenced scripts reported as no longer ours."""
        if self._values[shard] is not None:
            log.warning("lease lost", extra={"shard": shard, "relay": self.owner})
        self._forget(shard)

    async def release(self, shard: int) -> None:
        """Hand a lease back (the worker calls this between batches)."""
        value = self._values[shard]
        self._forget(shard)
        if value is None:
            return
        try:
            await self._release(keys=[self._keyspace.shard(shard).lease], args=[value])
            log.info("lease released", extra={"shard": shard, "relay": self.owner})
        except redis.exceptions.RedisError as exc:
            log.warning(
                "lease release failed",
                extra={"shard": shard, "relay": self.owner, "error": str(exc)},
            )

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
                log.info(
                    "handing over", extra={"shard": shard, "relay": self.owner, "share": target}
                )
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
        """Renew this relay's membership (join first if needed); the live members, sorted."""
        beat_ms = now_ms()
        expires_ms = beat_ms + int(self.ttl * 1000)
        key = self._keyspace.relays
        renewed, *members = await self._heartbeat_script(
            keys=[key], args=[self.owner, expires_ms, beat_ms]
        )
        if not renewed:
            try:
                await self._redis.zadd(key, {self.owner: expires_ms})
            except redis.exceptions.OutOfMemoryError:
                if not self._join_refused:
                    log.warning(
                        "cannot join the relay group while Redis is at maxmemory "
                        "(taking this relay's share anyway)",
                        extra={"relay": self.owner},
                    )
                self._join_refused = True
            else:
                self._join_refused = False
                members.append(self.owner.encode())
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
            log.info("lease acquired", extra={"shard": shard, "relay": self.owner, "lease": value})
        self._values[shard] = value
        self._valid_until[shard] = started + self.ttl
        self._acquired[shard].set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every third of the TTL until ``stop``, under supervision.

        After an unexpected error the next tick comes within a third of the TTL
        at most (the backoff's cap), so one crash costs no lease.
        """
        await supervise(
            lambda: self._round(stop),
            task="lease keeper",
            backoff=Backoff(initial=self.ttl / 30, cap=self.ttl / 3),
            stop=stop,
            relay=self.owner,
        )

    async def _round(self, stop: asyncio.Event) -> None:
        try:
            await self.tick()
        except redis.exceptions.RedisError as exc:
            log.warning("lease renewal failed", extra={"relay": self.owner, "error": str(exc)})
        finally:
            self.ticked.set()
        await wait_for_event(stop, self.ttl / 3)

    async def release_all(self) -> None:
        """Hand every lease back and leave the group, so others take over at once.

        All at once and for at most ``RELEASE_TIMEOUT`` seconds: a Redis that hangs must
        not hold the shutdown (one release after another, each waiting for its
        socket timeout, took over a minute). A lease left behind expires by
        itself after its TTL.
        """
        held = [shard for shard in range(self._keyspace.shards) if self._values[shard]]
        steps = [*(self.release(shard) for shard in held), self._leave()]
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT):
                await asyncio.gather(*steps)
        except TimeoutError:
            log.warning(
                "releasing leases timed out (they expire by themselves)",
                extra={"relay": self.owner, "timeout": RELEASE_TIMEOUT},
            )

    async def _leave(self) -> None:
        try:
            await self._redis.zrem(self._keyspace.relays, self.owner)
        except redis.exceptions.RedisError as exc:
            log.warning(
                "leaving the relay group failed", extra={"relay": self.owner, "error": str(exc)}
            )
