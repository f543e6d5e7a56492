"""``serve()``: the relay's whole life, from start-up checks to a clean stop.

The CLI is a thin shell around it; tests drive it directly with their own
``stop`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import attrs
import redis.exceptions

from .._retry import Backoff, wait_for_event
from ..connection import AsyncRedisClient, async_client
from ..exceptions import QueueUnavailable, RelayFatalError, TopologyMismatch
from ..protocol import topology
from ..protocol.keys import Keyspace
from .api import CentrifugoAPI, Verdict, open_transport
from .config import mask_url
from .health import HealthServer, HealthState, Sampler
from .lease import LeaseKeeper
from .metrics import RelayMetrics
from .settings import RelaySettings
from .transport import Transport
from .worker import ShardWorker

__all__ = ["serve"]

log = logging.getLogger("centrifugo_async.relay")

STARTUP_TIMEOUT = 30.0


async def serve(
    settings: RelaySettings,
    *,
    stop: asyncio.Event | None = None,
    transport: Transport | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
    metrics: RelayMetrics | None = None,
) -> None:
    """Run the relay until ``stop`` is set.

    Waits up to ``startup_timeout`` for Centrifugo and Redis, then runs one worker
    per shard and the lease keeper. On ``stop`` every worker finishes the batch it
    has in flight, leases are released and the function returns. When a reshard
    changes the recorded shard count, the workers stop the same way and start
    again over the new shards. Raises
    ``RelayFatalError`` (bad API key or URL, shard count mismatch) and
    ``QueueUnavailable`` (Redis unreachable at start-up).

    Requests to Centrifugo go through ``transport`` (closed on return) or, by
    default, ``open_transport(settings.api_url, ...)``: the lean HTTP/1.1 client
    for ``http://``, httpx for ``https://``.
    """
    stop = stop or asyncio.Event()
    metrics = metrics or RelayMetrics()
    health = HealthState(settings.relay_id)
    server = None
    if settings.metrics_port:
        server = HealthServer(settings.metrics_host, settings.metrics_port, metrics, health)
        server.start()
    client = async_client(settings.redis_url, cluster=settings.redis_cluster)
    if transport is None:
        transport = open_transport(
            settings.api_url, settings.api_key, timeout=settings.request_timeout
        )
    api = CentrifugoAPI(transport)
    try:
        deadline = time.monotonic() + startup_timeout
        await _check_centrifugo(api, settings, deadline, stop)
        while not stop.is_set():
            health.phase = "starting: waiting for the shard count to be recorded"
            keyspace = await _resolve_keyspace(client, settings, deadline, stop)
            health.phase = "running"
            observed = _Observed(metrics, health)
            if keyspace is None or not await _run(client, api, keyspace, settings, stop, observed):
                break
            log.info("shard count changed by a reshard, restarting the workers")
    finally:
        if server is not None:
            server.close()
        await api.aclose()
        await client.aclose()


_STARTUP_BACKOFF = Backoff(initial=0.1, cap=2.0)
"""Retries while Centrifugo and Redis come up: quick at first, never more than 2 s apart."""


async def _resolve_keyspace(
    client: AsyncRedisClient, settings: RelaySettings, deadline: float, stop: asyncio.Event
) -> Keyspace | None:
    """The keyspace to consume: the recorded shard count, checked against ``--shards``.

    With no count recorded yet, an explicit ``--shards`` is recorded; without one
    the relay waits for the first publisher to record its count, so publishers
    stay the source of truth. Returns None if stopped while waiting.
    """
    next_notice = 0.0
    attempts = _STARTUP_BACKOFF.attempts(stop)
    async for attempt in attempts:
        try:
            if settings.shards is None:
                recorded = await topology.read_shards_async(client, settings.prefix)
            else:
                recorded = await topology.record_shards_async(
                    client, settings.prefix, settings.shards
                )
        except TopologyMismatch as exc:
            raise RelayFatalError(str(exc)) from None
        except redis.exceptions.RedisError as exc:
            if time.monotonic() > deadline:
                raise QueueUnavailable(
                    f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}"
                ) from None
            log.warning("waiting for Redis error=%s retry_in=%.2fs", exc, attempt.delay)
            continue
        if recorded is not None:
            return Keyspace(prefix=settings.prefix, shards=recorded)
        # Redis answered: what is missing is a publisher, so poll at the idle pace.
        attempts.succeeded()
        if time.monotonic() >= next_notice:
            log.info(
                "waiting for a publisher to record the shard count of prefix=%s (or pass --shards)",
                settings.prefix,
            )
            next_notice = time.monotonic() + 30
        await wait_for_event(stop, settings.idle_wait)
    return None


async def _check_centrifugo(
    api: CentrifugoAPI, settings: RelaySettings, deadline: float, stop: asyncio.Event
) -> None:
    """Prove the API URL and key before touching any queue (HTTP 401 is fatal)."""
    async for attempt in _STARTUP_BACKOFF.attempts(stop):
        result = await api.check()
        if result.verdict is Verdict.REPLIES:
            return
        if time.monotonic() > deadline:
            raise RelayFatalError(
                f"Centrifugo API at {settings.api_url} is not answering: {result.reason}"
            )
        log.warning(
            "waiting for Centrifugo url=%s reason=%s retry_in=%.2fs",
            settings.api_url,
            result.reason,
            attempt.delay,
        )


async def _run(
    client: AsyncRedisClient,
    api: CentrifugoAPI,
    keyspace: Keyspace,
    settings: RelaySettings,
    stop: asyncio.Event,
    observed: _Observed,
) -> bool:
    """Run the workers until ``stop``, or until the shard count changes (returns True)."""
    cycle = asyncio.Event()
    leases = LeaseKeeper(client, keyspace, settings.relay_id, settings.lease_ttl)
    workers = [
        ShardWorker(keys, client, api, leases, settings, cycle, observed.metrics)
        for keys in keyspace.all_shards()
    ]
    sampler = Sampler(
        client,
        api,
        keyspace,
        leases,
        observed.metrics,
        observed.health,
        stuck_after=settings.stuck_after,
        interval=settings.lease_renew_interval,
    )
    log.info(
        "relay started relay=%s shards=%d prefix=%s api=%s",
        settings.relay_id,
        keyspace.shards,
        keyspace.prefix,
        settings.api_url,
    )
    keeper = asyncio.create_task(leases.run(cycle), name="lease-keeper")
    sampling = asyncio.create_task(sampler.run(cycle), name="health-sampler")
    watcher = asyncio.create_task(
        _watch_topology(client, keyspace, settings, stop, cycle), name="topology-watcher"
    )
    tasks = [asyncio.create_task(w.run(), name=f"shard-{w.shard}") for w in workers]
    failure: BaseException | None = None
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except RelayFatalError as exc:
                if failure is None:
                    failure = exc
                    log.error("relay stopping: %s", exc)
                stop.set()
    finally:
        cycle.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await keeper
        await sampling
        changed = await watcher
        await leases.release_all()
        delivered = sum(w.counts.delivered for w in workers)
        log.info("relay stopped relay=%s delivered=%d", settings.relay_id, delivered)
    if failure is not None:
        raise failure
    return changed


async def _watch_topology(
    client: AsyncRedisClient,
    keyspace: Keyspace,
    settings: RelaySettings,
    stop: asyncio.Event,
    cycle: asyncio.Event,
) -> bool:
    """End the cycle on ``stop``, or when a reshard records another shard count."""
    changed = await topology.watch_shards(
        client,
        keyspace.prefix,
        keyspace.shards,
        interval=settings.lease_renew_interval,
        until=stop,
    )
    cycle.set()
    return changed


@attrs.frozen
class _Observed:
    """Where the relay reports what it does: metrics and the /health state."""

    metrics: RelayMetrics
    health: HealthState
