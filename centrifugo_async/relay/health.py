"""``/health``, ``/livez`` and ``/metrics`` (the shared ``StatusServer``), plus the sampler.

The sampler runs in the relay's event loop every few seconds: it pings Redis,
probes Centrifugo with an empty batch, and reads depth, in-flight count and lag
of the shards this relay owns into the gauges. ``/health`` answers from the last
sample (200 or 503 with the problems listed), so a health check never waits on
Redis or Centrifugo itself; a sample older than ``STALE_AFTER`` intervals is a
problem of its own, since a sampler that stopped (a hung call, a stuck event
loop) would otherwise keep the last good answer forever. ``/livez`` asks only
whether the event loop still runs callbacks, for a liveness probe: a relay
waiting for Redis or Centrifugo is alive, one whose loop is stuck is not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs
import redis.exceptions

from .._clock import now_ms
from .._retry import Backoff, wait_for_event
from .._status_server import LIVENESS_TIMEOUT, StatusServer, loop_responds
from ..connection import AsyncRedisClient
from ..exceptions import RelayFatalError
from ..protocol.keys import Keyspace
from ..protocol.probe import ShardDepth, plan_depths
from .api import CentrifugoAPI, Verdict
from .lease import LeaseKeeper
from .metrics import RelayMetrics
from .supervision import supervise

__all__ = [
    "LIVENESS_TIMEOUT",
    "STALE_AFTER",
    "HealthServer",
    "HealthState",
    "Sampler",
    "loop_responds",
]

log = logging.getLogger("centrifugo_async.relay")

STALE_AFTER = 3
"""A sample older than this many sample intervals makes ``/health`` answer 503."""


@attrs.define
class HealthState:
    """The latest sample; read by the HTTP thread, written by the event loop."""

    relay_id: str
    sample_interval: float
    """Seconds between samples (the lease renewal interval)."""
    phase: str = "starting: checking Centrifugo and Redis"
    """What the relay is doing before its first sample (then "running")."""
    redis_ok: bool = False
    redis_error: str = ""
    centrifugo_ok: bool = False
    centrifugo_error: str = ""
    stuck: dict[int, float] = attrs.Factory(dict)
    """Owned shards whose oldest message waits longer than ``stuck_after`` (seconds)."""
    owned: int = 0
    unowned: int = 0
    """Shards no relay held a lease on (counted only when this relay owns none)."""
    sampled_at: float = 0.0

    def report(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        now = time.time() if now is None else now
        problems = []
        if not self.sampled_at:
            problems.append(self.phase)
        else:
            age = now - self.sampled_at
            if age > STALE_AFTER * self.sample_interval:
                problems.append(
                    f"last sample is {age:.1f}s old (sampled every "
                    f"{self.sample_interval:.1f}s): the relay is stuck on Redis, "
                    "Centrifugo or its event loop"
                )
            problems.extend(self._reachability())
            if self.owned == 0 and self.unowned:
                problems.append(
                    f"holds no lease while {self.unowned} shards have no owner: it cannot take them"
                )
        problems.extend(
            f"shard {shard} stuck: oldest message waits {lag:.1f}s"
            for shard, lag in sorted(self.stuck.items())
        )
        body = {
            "status": "ok" if not problems else "unhealthy",
            "relay": self.relay_id,
            "phase": self.phase,
            "owned_shards": self.owned,
            "problems": problems,
            "sampled_at": self.sampled_at,
        }
        return not problems, body

    def _reachability(self) -> list[str]:
        problems = []
        if not self.redis_ok:
            problems.append(f"redis unreachable: {self.redis_error}")
        if not self.centrifugo_ok:
            problems.append(f"centrifugo unreachable: {self.centrifugo_error}")
        return problems


class Sampler:
    def __init__(
        self,
        client: AsyncRedisClient,
        api: CentrifugoAPI,
        keyspace: Keyspace,
        leases: LeaseKeeper,
        metrics: RelayMetrics,
        state: HealthState,
        stuck_after: float,
        interval: float,
    ) -> None:
        self._redis = client
        self._api = api
        self._keyspace = keyspace
        self._leases = leases
        self._metrics = metrics
        self._state = state
        self._stuck_after = stuck_after
        self._interval = interval
        self._exported: set[int] = set()

    async def run(self, stop: asyncio.Event) -> None:
        # The first sample waits for the lease keeper's first round, so that a
        # relay about to take its shards is not reported as owning none.
        await wait_for_event(self._leases.ticked, self._interval)
        await supervise(
            lambda: self._round(stop),
            task="health sampler",
            backoff=Backoff(initial=self._interval / 10, cap=self._interval),
            stop=stop,
        )

    async def _round(self, stop: asyncio.Event) -> None:
        await self.sample()
        await wait_for_event(stop, self._interval)

    async def sample(self) -> None:
        state = self._state
        try:
            result = await self._api.check()
            state.centrifugo_ok = result.verdict is Verdict.REPLIES
            state.centrifugo_error = result.reason
        except RelayFatalError as exc:
            state.centrifugo_ok, state.centrifugo_error = False, str(exc)
        held = self._leases.held_shards()
        unowned = 0
        try:
            depths = await self._shard_depths(held)
            if not held:
                unowned = await self._unowned_shards()
            state.redis_ok, state.redis_error = True, ""
        except redis.exceptions.RedisError as exc:
            state.redis_ok, state.redis_error = False, str(exc)
            depths = []
        sampled_ms = now_ms()
        stuck = {}
        for depth in depths:
            lag = (depth.oldest_age_ms(sampled_ms) or 0) / 1000
            label = str(depth.shard)
            self._metrics.queue_depth.labels(label).set(depth.queued)
            self._metrics.in_flight.labels(label).set(depth.in_flight)
            self._metrics.lag.labels(label).set(lag)
            self._metrics.lease_owned.labels(label).set(1)
            if lag > self._stuck_after:
                stuck[depth.shard] = lag
        sampled = {depth.shard for depth in depths}
        for shard in self._exported - sampled:
            self._metrics.forget_shard(shard)
        self._exported = sampled
        state.stuck = stuck
        state.owned = len(held)
        state.unowned = unowned
        state.sampled_at = time.time()

    async def _unowned_shards(self) -> int:
        """How many shards have no lease at all (asked only when this relay owns none)."""
        pipe = self._redis.pipeline(transaction=False)
        for keys in self._keyspace.all_shards():
            pipe.exists(keys.lease)
        return sum(1 for exists in await pipe.execute() if not exists)

    async def _shard_depths(self, shards: list[int]) -> list[ShardDepth]:
        """Depth and oldest message of each owned shard, after a ping (so even a
        relay that owns nothing notices when Redis goes away)."""
        await self._redis.ping()
        if not shards:
            return []
        probe = plan_depths(self._keyspace, shards)
        pipe = self._redis.pipeline(transaction=False)
        for command in probe.commands:
            pipe.execute_command(*command)
        return probe.read(await pipe.execute())


class HealthServer(StatusServer):
    """Serves ``GET /metrics``, ``GET /health`` and ``GET /livez`` for the relay.

    ``loop`` is the relay's event loop, which ``/livez`` checks.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: RelayMetrics,
        state: HealthState,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(host, port, metrics.registry, state.report, log, loop=loop)
