"""The forwarder's ``/health`` state and the sampler that keeps it (and the gauges) current.

Every ``sample_interval`` the sampler pings Redis and reads the backlog of the
lanes this forwarder owns over a connection of its own, so a health check
never waits on either. Unhealthy: PostgreSQL or Redis unreachable, or an owned
lane whose oldest row waits longer than ``stuck_after``. A standby forwarder
(owning no lane) is healthy while it can reach both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import psycopg
import redis.exceptions

from .._retry import wait_for_event
from ..connection import AsyncRedisClient
from .metrics import ForwarderMetrics
from .stats import lane_backlog_async
from .table import OutboxTable

__all__ = ["ForwarderHealth", "ForwarderSampler"]

log = logging.getLogger("centrifugo_async.outbox")


@attrs.define
class ForwarderHealth:
    """The latest sample; read by the HTTP thread, written by the event loop."""

    forwarder_id: str
    phase: str = "starting: checking PostgreSQL and Redis"
    postgres_ok: bool = False
    postgres_error: str = ""
    redis_ok: bool = False
    redis_error: str = ""
    stuck: dict[int, float] = attrs.Factory(dict)
    owned: int = 0
    backlog: int = 0
    sampled_at: float = 0.0

    def report(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        if not self.sampled_at:
            problems.append(self.phase)
        else:
            if not self.postgres_ok:
                problems.append(f"postgres unreachable: {self.postgres_error}")
            if not self.redis_ok:
                problems.append(f"redis unreachable: {self.redis_error}")
        problems.extend(
            f"lane {lane} stuck: oldest row waits {age:.1f}s"
            for lane, age in sorted(self.stuck.items())
        )
        body = {
            "status": "ok" if not problems else "unhealthy",
            "forwarder": self.forwarder_id,
            "phase": self.phase,
            "owned_lanes": self.owned,
            "backlog": self.backlog,
            "problems": problems,
            "sampled_at": self.sampled_at,
        }
        return not problems, body


class ForwarderSampler:
    def __init__(
        self,
        dsn: str,
        application_name: str,
        redis_client: AsyncRedisClient,
        table: OutboxTable,
        owned: Callable[[], set[int]],
        metrics: ForwarderMetrics,
        state: ForwarderHealth,
        stuck_after: float,
        interval: float,
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._redis = redis_client
        self._table = table
        self._owned = owned
        self._metrics = metrics
        self._state = state
        self._stuck_after = stuck_after
        self._interval = interval
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._exported: set[int] = set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.sample()
                await wait_for_event(stop, self._interval)
        finally:
            if self._conn is not None:
                await self._conn.close()

    async def sample(self) -> None:
        state = self._state
        try:
            await self._redis.ping()
            state.redis_ok, state.redis_error = True, ""
        except redis.exceptions.RedisError as exc:
            state.redis_ok, state.redis_error = False, str(exc)
        owned = self._owned()
        try:
            lanes = await lane_backlog_async(await self._connection(), self._table)
            state.postgres_ok, state.postgres_error = True, ""
        except psycopg.Error as exc:
            state.postgres_ok, state.postgres_error = False, str(exc).strip()
            await self._drop_connection()
            lanes = []
        stuck = {}
        sampled: set[int] = set()
        for lane in lanes:
            if lane.lane not in owned:
                continue
            age = (lane.oldest_age_ms or 0) / 1000
            self._metrics.backlog.labels(str(lane.lane)).set(lane.rows)
            self._metrics.oldest_age.labels(str(lane.lane)).set(age)
            sampled.add(lane.lane)
            if age > self._stuck_after:
                stuck[lane.lane] = age
        for empty in owned - sampled:
            self._metrics.backlog.labels(str(empty)).set(0)
            self._metrics.oldest_age.labels(str(empty)).set(0)
        for lost in self._exported - owned:
            self._metrics.forget_lane(lost)
        self._exported = set(owned)
        self._metrics.lanes_owned.set(len(owned))
        state.stuck = stuck
        state.owned = len(owned)
        state.backlog = sum(lane.rows for lane in lanes if lane.lane in owned)
        state.sampled_at = time.time()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=5,
                application_name=self._application_name,
            )
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except psycopg.Error as exc:
                log.debug("closing the sampler's connection failed", extra={"error": str(exc)})
            self._conn = None
