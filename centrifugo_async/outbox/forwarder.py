"""The outbox forwarder: committed rows -> the shard lists, at least once, in order per key.

Work is split into *lanes*, one per shard value of the rows. A forwarder owns a
lane by holding a session-level advisory lock on it (``pg_try_advisory_lock``
with the table's lock class and the lane), so several forwarders can run at
once: each lane has at most one owner, the others stand by and take the lanes
of one that dies (PostgreSQL frees its locks when its session ends).

One *sweep* is one transaction over every owned lane::

    DELETE up to `batch` oldest rows of each owned lane, RETURNING them
    ENQUEUE them into Redis in id order (the protocol's script: seq assigned as
        for any publish)
    COMMIT

Nothing is ever skipped: rows are never read past a high-water mark, and their
deletion commits only after they were enqueued, so a row whose transaction
commits late (ids are taken at insert, not at commit) is simply found by a
later sweep. A failed enqueue rolls the deletion back; a crash or a lost
connection between the enqueue and the commit does the same, and the rows are
enqueued again: at least once, the duplicates in order, and dropped by
Centrifugo's idempotency key and the subscribers' version gates.

Per key, the forwarder keeps id order within a lane. That is the commit order of
a key's changes as long as the application serialises them with the object's
row lock (update the row, then publish, in one transaction): a second writer of
the same object waits for the first to commit before it can insert its row, so
its id is larger and the first row is already visible.

Wake-ups come from LISTEN/NOTIFY (the table's trigger notifies once per
inserting statement) on a connection of their own, with ``poll_interval`` as
the fallback; a sweep that filled its batch starts the next one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import psycopg
import redis.exceptions

from .._clock import now_ms
from .._retry import Attempts, Backoff, wait_for_event
from .._status_server import StatusServer
from ..connection import AsyncRedisClient, async_client
from ..exceptions import QueueUnavailable, TopologyMismatch
from ..protocol import topology
from ..protocol.keys import Keyspace
from ..protocol.routing import DEFAULT_SHARDS
from ..protocol.scripts import ENQUEUE
from ..publisher._plan import translate_redis_error
from .batch import ForwardBatch, PendingRow, plan_batch
from .health import ForwarderHealth, ForwarderSampler
from .metrics import ForwarderMetrics
from .schema import check_schema_async
from .settings import ForwarderSettings
from .stats import APPLICATION_PREFIX
from .table import OutboxTable

__all__ = ["Forwarder", "forward"]

log = logging.getLogger("centrifugo_async.outbox")


class Forwarder:
    """Owns lanes, sweeps them, and reconnects; ``forward()`` runs it with its helpers."""

    def __init__(
        self,
        settings: ForwarderSettings,
        redis_client: AsyncRedisClient,
        metrics: ForwarderMetrics,
        health: ForwarderHealth,
    ) -> None:
        self.settings = settings
        self.table = OutboxTable(settings.table)
        self.metrics = metrics
        self.health = health
        self.owned: set[int] = set()
        self.forwarded = 0
        self.wake = asyncio.Event()
        self._redis = redis_client
        self._backoff = Backoff(settings.retry_initial, settings.retry_max)
        self._keyspace: Keyspace | None = None
        self._warned_reroute = False

    @property
    def application_name(self) -> str:
        return (APPLICATION_PREFIX + self.settings.forwarder_id)[:63]

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.settings.dsn,
            autocommit=True,
            connect_timeout=5,
            application_name=self.application_name,
        )

    # --- topology ---------------------------------------------------------------------

    async def _ensure_keyspace(self) -> Keyspace:
        """The keyspace to enqueue into: the count recorded in Redis (recording ours if none)."""
        if self._keyspace is not None:
            return self._keyspace
        prefix = self.settings.prefix
        try:
            if self.settings.shards is not None:
                shards = await topology.record_shards_async(
                    self._redis, prefix, self.settings.shards
                )
            else:
                shards = await topology.read_shards_async(self._redis, prefix) or (
                    await topology.record_shards_async(self._redis, prefix, DEFAULT_SHARDS)
                )
        except redis.exceptions.RedisError as exc:
            raise translate_redis_error(exc) from exc
        self._keyspace = Keyspace(prefix=prefix, shards=shards)
        log.info("enqueueing into Redis", extra={"prefix": prefix, "shards": shards})
        return self._keyspace

    async def _adopt_recorded_count(self, exc: TopologyMismatch) -> None:
        """After a reshard sealed a shard: follow the count Redis records now."""
        try:
            recorded = await topology.read_shards_async(self._redis, self.settings.prefix)
        except redis.exceptions.RedisError as error:
            raise translate_redis_error(error) from error
        current = self._keyspace.shards if self._keyspace else None
        if recorded is not None and recorded != current:
            log.warning(
                "shard count changed: rows are routed again",
                extra={"old_shards": current, "shards": recorded},
            )
            self._keyspace = Keyspace(prefix=self.settings.prefix, shards=recorded)
        else:
            log.warning("enqueue refused while resharding, waiting", extra={"error": str(exc)})

    # --- the main loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, check the schema, then claim and sweep lanes until ``stop`` is set.

        A lost or failing connection is opened again with backoff (its locks are
        gone with it, so the lanes are claimed anew); a missing or newer schema
        is fatal (``OutboxSchemaError``).
        """
        if self.settings.shards is not None:
            with contextlib.suppress(QueueUnavailable):
                await self._ensure_keyspace()  # a conflicting --shards fails at once
        attempts = self._backoff.attempts(stop)
        async for attempt in attempts:
            try:
                async with await self._connect() as conn:
                    await check_schema_async(conn, self.table)
                    self.health.phase = "running"
                    log.info("forwarder connected", extra={"forwarder": self.settings.forwarder_id})
                    await self._serve(conn, stop, attempts)
                    return
            except psycopg.Error as exc:
                self.owned.clear()
                self.metrics.retried.labels("postgres").inc()
                self.health.phase = f"reconnecting to PostgreSQL: {str(exc).strip()}"
                log.warning(
                    "postgres unavailable",
                    extra={"error": str(exc).strip(), "retry_in": attempt.delay},
                )

    async def _serve(
        self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event, attempts: Attempts
    ) -> None:
        self.owned.clear()
        next_claim = 0.0
        redis_failures = 0
        while not stop.is_set():
            if time.monotonic() >= next_claim:
                await self._claim(conn)
                next_claim = time.monotonic() + self.settings.claim_interval
            self.wake.clear()
            try:
                full = await self._sweep(conn) if self.owned else False
            except TopologyMismatch as exc:
                self.metrics.retried.labels("topology").inc()
                with contextlib.suppress(QueueUnavailable):
                    await self._adopt_recorded_count(exc)
                await wait_for_event(stop, self._backoff.delay(0))
                continue
            except QueueUnavailable as exc:
                delay = self._backoff.delay(redis_failures)
                redis_failures += 1
                self.metrics.retried.labels("redis").inc()
                log.warning(
                    "redis unavailable, rows wait", extra={"error": str(exc), "retry_in": delay}
                )
                await wait_for_event(stop, delay)
                continue
            redis_failures = 0
            attempts.succeeded()
            if not full:
                timeout = min(self.settings.poll_interval, next_claim - time.monotonic())
                await self._wait(stop, max(timeout, 0.0))

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Until a NOTIFY, ``stop``, or ``seconds`` pass."""
        if self.wake.is_set() or stop.is_set():
            return
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _claim(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Take every free lane: the expected ones (0..shards-1) and any that holds rows."""
        expected = self._keyspace.shards if self._keyspace else self.settings.shards
        lanes = set(range(expected or DEFAULT_SHARDS))
        in_use = await (await conn.execute(self.table.lanes_in_use)).fetchall()
        lanes.update(int(lane) for (lane,) in in_use)
        free = sorted(lanes - self.owned)
        if not free:
            return
        taken = await (await conn.execute(self.table.try_lock_lanes, (free,))).fetchall()
        if taken:
            self.owned.update(int(lane) for (lane,) in taken)
            log.info(
                "took lanes",
                extra={
                    "lanes": [int(lane) for (lane,) in taken],
                    "forwarder": self.settings.forwarder_id,
                    "owns": len(self.owned),
                },
            )
            self.wake.set()

    async def _sweep(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """One transaction: take (delete and read), enqueue, commit. True if some lane
        filled its batch. An enqueue that fails rolls the deletion back."""
        keyspace = await self._ensure_keyspace()
        limit = self.settings.batch
        async with conn.transaction():
            cursor = await conn.execute(self.table.take_batch, (sorted(self.owned), limit))
            records = await cursor.fetchall()
            if not records:
                return False
            rows = sorted(
                (
                    PendingRow(int(i), int(lane), int(shards), envelope.encode(), int(created))
                    for i, lane, shards, envelope, created in records
                ),
                key=lambda row: (row.lane, row.id),
            )
            batch = plan_batch(rows, keyspace, self.settings.forwarder_id)
            await self._enqueue(batch)
        self._account(batch, rows)
        per_lane: dict[int, int] = {}
        for row in rows:
            per_lane[row.lane] = per_lane.get(row.lane, 0) + 1
        return max(per_lane.values()) >= limit

    async def _enqueue(self, batch: ForwardBatch) -> None:
        """Run the enqueue calls in one pipeline; then record the dead letters, if any.

        ``EVAL`` (not ``EVALSHA``): one call per shard per sweep, so sending the
        source costs little, and a Redis that lost its script cache (a restart,
        a failover) needs no second round.
        """
        try:
            pipe = self._redis.pipeline(transaction=False)
            for call in batch.calls:
                pipe.execute_command("EVAL", ENQUEUE.source, 3, *call.keys_and_args)
            replies = await pipe.execute(raise_on_error=False) if batch.calls else []
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise translate_redis_error(reply)
            if batch.dead_letters:
                pipe = self._redis.pipeline(transaction=False)
                for keys, letter in batch.dead_letters:
                    pipe.rpush(keys.dlq, letter)
                    pipe.hincrby(keys.state, "dead_lettered", 1)
                await pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise translate_redis_error(exc) from exc

    def _account(self, batch: ForwardBatch, rows: list[PendingRow]) -> None:
        moved = batch.enqueued
        self.forwarded += moved
        self.metrics.forwarded.inc(moved)
        self.metrics.batch_size.observe(len(rows))
        now = now_ms()
        for row in rows:
            self.metrics.commit_to_enqueue.observe(max(0, now - row.created_ms) / 1000)
        if batch.dead_letters:
            self.metrics.dead_lettered.inc(len(batch.dead_letters))
            log.error("outbox rows dead-lettered", extra={"count": len(batch.dead_letters)})
        if batch.rerouted:
            self.metrics.rerouted.inc(batch.rerouted)
            if not self._warned_reroute:
                self._warned_reroute = True
                log.warning(
                    "rows were written with another shard count than Redis records; "
                    "routing them again (configure the writers' Outbox(shards=...) to match)"
                )

    async def listen(self, stop: asyncio.Event) -> None:
        """LISTEN on a connection of its own and set ``wake`` on every notification."""
        attempts = self._backoff.attempts(stop)
        async for attempt in attempts:
            try:
                async with await self._connect() as conn:
                    await conn.execute(self.table.listen)
                    attempts.succeeded()
                    self.wake.set()  # anything inserted while we were not listening
                    async for _ in conn.notifies():
                        self.wake.set()
            except psycopg.Error as exc:
                log.debug(
                    "listen connection lost", extra={"error": str(exc), "retry_in": attempt.delay}
                )


async def forward(
    settings: ForwarderSettings,
    *,
    stop: asyncio.Event,
    metrics: ForwarderMetrics | None = None,
) -> int:
    """Run one forwarder until ``stop`` is set; returns how many rows it forwarded.

    Serves ``/metrics`` and ``/health`` on ``metrics_port`` unless it is 0.
    ``metrics`` lets an embedding application (or a test) read the counters.
    """
    metrics = metrics or ForwarderMetrics()
    health = ForwarderHealth(settings.forwarder_id)
    redis_client = async_client(
        settings.redis_url, cluster=settings.redis_cluster, timeout=settings.redis_timeout
    )
    forwarder = Forwarder(settings, redis_client, metrics, health)
    sampler = ForwarderSampler(
        settings.dsn,
        forwarder.application_name,
        redis_client,
        forwarder.table,
        lambda: set(forwarder.owned),
        metrics,
        health,
        settings.stuck_after,
        settings.sample_interval,
    )
    server = None
    if settings.metrics_port:
        server = StatusServer(
            settings.metrics_host,
            settings.metrics_port,
            metrics.registry,
            health.report,
            log,
            loop=asyncio.get_running_loop(),
        )
        server.start()
    helpers = [
        asyncio.create_task(forwarder.listen(stop)),
        asyncio.create_task(sampler.run(stop)),
    ]
    try:
        await forwarder.run(stop)
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await redis_client.aclose()
        if server is not None:
            server.close()
        log.info(
            "forwarder stopped",
            extra={"forwarder": settings.forwarder_id, "forwarded": forwarder.forwarded},
        )
    return forwarder.forwarded
