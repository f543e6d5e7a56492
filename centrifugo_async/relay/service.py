"""``serve()``: the relay's whole life, from start-up checks to a clean stop.

The CLI is a thin shell around it; tests drive it directly with their own
``stop`` event.

A stop is bounded even when Redis or Centrifugo hangs (``stop_bound``): each
worker gets one request timeout plus ``STOP_ALLOWANCE`` to finish and
acknowledge its batch and is cancelled after that (the batch stays in flight
for the next owner); the loops that have nothing to finish are cancelled at
once; the leases are released together within ``RELEASE_TIMEOUT``; closing
the connections takes at most ``CLOSE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import attrs
import redis.exceptions

from .._retry import Backoff, wait_for_event
from ..connection import AsyncRedisClient, async_client
from ..exceptions import QueueUnavailable, RelayFatalError, TopologyMismatch
from ..logs import mask_url
from ..protocol import topology
from ..protocol.keys import Keyspace
from .api import Verdict
from .health import HealthServer, HealthState, Sampler
from .lease import RELEASE_TIMEOUT, LeaseKeeper
from .metrics import RelayMetrics
from .nodes import NodeSet
from .settings import RelaySettings
from .supervision import supervise
from .transport import Transport
from .worker import ShardWorker

__all__ = ["CLOSE_TIMEOUT", "STOP_ALLOWANCE", "serve", "stop_bound"]

log = logging.getLogger("centrifugo_async.relay")

STARTUP_TIMEOUT = 30.0

STOP_ALLOWANCE = 2.0
"""Seconds a stopping worker gets beyond ``request_timeout`` to acknowledge its last batch."""

CLOSE_TIMEOUT = 1.0
"""Seconds closing the Redis and HTTP connections may take on the way out."""

T = TypeVar("T")


def stop_bound(settings: RelaySettings) -> float:
    """The longest a stop takes, from ``stop`` being set to ``serve`` returning.

    ``request_timeout + 5 s`` with the defaults' constants (10 s in all): the
    documented grace period before a SIGKILL, ``request_timeout + 10 s``, covers it.
    """
    return settings.request_timeout + STOP_ALLOWANCE + RELEASE_TIMEOUT + CLOSE_TIMEOUT


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
    default, one ``open_transport(url, ...)`` per URL of ``settings.api_url``
    (``nodes.NodeSet``): the lean HTTP/1.1 client for ``http://``, httpx for
    ``https://``.
    """
    stop = stop or asyncio.Event()
    metrics = metrics or RelayMetrics()
    health = HealthState(settings.relay_id, settings.lease_renew_interval)
    server = None
    if settings.metrics_port:
        server = HealthServer(
            settings.metrics_host,
            settings.metrics_port,
            metrics,
            health,
            asyncio.get_running_loop(),
        )
        server.start()
    client = async_client(settings.redis_url, cluster=settings.redis_cluster)
    if transport is None:
        nodes = NodeSet.open(
            settings.api_urls, settings.api_key, timeout=settings.request_timeout, metrics=metrics
        )
    else:
        nodes = NodeSet([(_api_label(settings), transport)], metrics=metrics)
    try:
        deadline = time.monotonic() + startup_timeout
        await _check_centrifugo(nodes, settings, deadline, stop)
        while not stop.is_set():
            health.phase = "starting: waiting for the shard count to be recorded"
            keyspace = await _resolve_keyspace(client, settings, deadline, stop)
            health.phase = "running"
            observed = _Observed(metrics, health)
            if keyspace is None or not await _run(
                client, nodes, keyspace, settings, stop, observed
            ):
                break
            log.info("shard count changed by a reshard, restarting the workers")
    finally:
        if server is not None:
            server.close()
        await _closed(nodes.aclose(), "centrifugo")
        await _closed(client.aclose(), "redis")


async def _closed(closing: Awaitable[None], peer: str) -> None:
    """Close within ``CLOSE_TIMEOUT``: a peer that hangs must not hold the exit."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await closing
    except TimeoutError:
        log.warning("closing connections timed out", extra={"peer": peer, "timeout": CLOSE_TIMEOUT})


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
                reading = topology.read_shards_async(client, settings.prefix)
            else:
                reading = topology.record_shards_async(client, settings.prefix, settings.shards)
            recorded = await _unless_stopped(reading, stop)
        except _Stopped:
            return None
        except TopologyMismatch as exc:
            raise RelayFatalError(str(exc)) from None
        except redis.exceptions.RedisError as exc:
            if time.monotonic() > deadline:
                raise QueueUnavailable(
                    f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}"
                ) from None
            log.warning("waiting for Redis", extra={"error": str(exc), "retry_in": attempt.delay})
            continue
        if recorded is not None:
            return Keyspace(prefix=settings.prefix, shards=recorded)
        # Redis answered: what is missing is a publisher, so poll at the idle pace.
        attempts.succeeded()
        if time.monotonic() >= next_notice:
            log.info(
                "waiting for a publisher to record the shard count (or pass --shards)",
                extra={"prefix": settings.prefix},
            )
            next_notice = time.monotonic() + 30
        await wait_for_event(stop, settings.idle_wait)
    return None


class _Stopped(Exception):
    """``stop`` was set while waiting on a call that may hang."""


async def _unless_stopped(call: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
    """The call's result, or ``_Stopped`` (the call cancelled) as soon as ``stop`` is set."""
    task = asyncio.ensure_future(call)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise _Stopped
    return task.result()


def _api_label(settings: RelaySettings) -> str:
    """The API URLs as logs show them (passwords masked)."""
    return ", ".join(mask_url(url) for url in settings.api_urls)


async def _check_centrifugo(
    nodes: NodeSet, settings: RelaySettings, deadline: float, stop: asyncio.Event
) -> None:
    """Prove the API URL and key before touching any queue (HTTP 401 is fatal).

    With several nodes, one answering is enough to start; the others are
    passed over until they answer.
    """
    async for attempt in _STARTUP_BACKOFF.attempts(stop):
        result = await nodes.check()
        if result.verdict is Verdict.REPLIES:
            return
        if time.monotonic() > deadline:
            raise RelayFatalError(
                f"Centrifugo API at {_api_label(settings)} is not answering: {result.reason}"
            )
        log.warning(
            "waiting for Centrifugo",
            extra={
                "api": _api_label(settings),
                "reason": result.reason,
                "retry_in": attempt.delay,
            },
        )


async def _run(
    client: AsyncRedisClient,
    nodes: NodeSet,
    keyspace: Keyspace,
    settings: RelaySettings,
    stop: asyncio.Event,
    observed: _Observed,
) -> bool:
    """Run the workers until ``stop``, or until the shard count changes (returns True)."""
    cycle = asyncio.Event()
    leases = LeaseKeeper(client, keyspace, settings.relay_id, settings.lease_ttl)
    workers = [
        ShardWorker(
            keys, client, nodes.api_for(keys.shard), leases, settings, cycle, observed.metrics
        )
        for keys in keyspace.all_shards()
    ]
    sampler = Sampler(
        client,
        nodes.api_for(0),
        keyspace,
        leases,
        observed.metrics,
        observed.health,
        stuck_after=settings.stuck_after,
        interval=settings.lease_renew_interval,
    )
    log.info(
        "relay started",
        extra={
            "relay": settings.relay_id,
            "shards": keyspace.shards,
            "prefix": keyspace.prefix,
            "api": _api_label(settings),
        },
    )
    keeper = asyncio.create_task(leases.run(cycle), name="lease-keeper")
    sampling = asyncio.create_task(sampler.run(cycle), name="health-sampler")
    watcher = asyncio.create_task(
        _watch_topology(client, keyspace, settings, stop, cycle), name="topology-watcher"
    )
    grace = settings.request_timeout + STOP_ALLOWANCE
    tasks = [
        asyncio.create_task(_within_grace(w, cycle, grace), name=f"shard-{w.shard}")
        for w in workers
    ]
    failure: BaseException | None = None
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except RelayFatalError as exc:
                if failure is None:
                    failure = exc
                    log.error("relay stopping", extra={"error": str(exc)})
                stop.set()
    finally:
        cycle.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await _cancelled(keeper)
        await _cancelled(sampling)
        changed = bool(watcher.done() and not watcher.cancelled() and watcher.result())
        await _cancelled(watcher)
        await leases.release_all()
        delivered = sum(w.counts.delivered for w in workers)
        log.info("relay stopped", extra={"relay": settings.relay_id, "delivered": delivered})
    if failure is not None:
        raise failure
    return changed


async def _within_grace(worker: ShardWorker, cycle: asyncio.Event, grace: float) -> None:
    """Run ``worker``; once ``cycle`` ends, give it ``grace`` seconds, then cancel it.

    A worker finishes its batch on a stop: the request (bounded by the request
    timeout) and the ack. When Redis hangs the ack may never come back; the
    batch then stays in flight and its next owner delivers it first.
    """
    running = asyncio.ensure_future(worker.run())
    ending = asyncio.ensure_future(cycle.wait())
    try:
        await asyncio.wait((running, ending), return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await asyncio.wait((running,), timeout=grace)
        if not running.done():
            log.warning(
                "shard worker did not finish in time after the stop, cancelled "
                "(its batch stays in flight)",
                extra={"shard": worker.shard, "timeout": grace},
            )
    finally:
        ending.cancel()
        await _cancelled(running)
    if not running.cancelled():
        running.result()  # RelayFatalError and the like reach the supervisor


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` unless it is done, and wait for it; its own errors are not raised."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _watch_topology(
    client: AsyncRedisClient,
    keyspace: Keyspace,
    settings: RelaySettings,
    stop: asyncio.Event,
    cycle: asyncio.Event,
) -> bool:
    """End the cycle on ``stop`` (at once, even mid-read), or when a reshard records
    another shard count. Supervised: a watcher that died would leave the workers
    running after a stop."""
    changed = False

    async def watch() -> bool:
        nonlocal changed
        watching = topology.watch_shards(
            client,
            keyspace.prefix,
            keyspace.shards,
            interval=settings.lease_renew_interval,
            until=stop,
        )
        with contextlib.suppress(_Stopped):
            changed = await _unless_stopped(watching, stop)
        return True

    try:
        await supervise(
            watch,
            task="topology watcher",
            backoff=Backoff(initial=settings.retry_initial, cap=settings.lease_renew_interval),
            stop=stop,
        )
    finally:
        cycle.set()
    return changed


@attrs.frozen
class _Observed:
    """Where the relay reports what it does: metrics and the /health state."""

    metrics: RelayMetrics
    health: HealthState
