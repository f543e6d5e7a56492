"""Running the relay for months: metrics, health, policies, Redis restarts, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable

import attrs
import pytest
import redis

from centrifugo_async import AsyncPublisher, Message, shard_for
from centrifugo_async.cli import ExitCode
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.settings import Freshness, FreshnessRule, LatePolicy
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess, free_port
from tests.support.checks import order_inversions, published_pairs
from tests.support.logs import json_line_problems, log_records
from tests.support.stack import wait_until_drained
from tests.support.subscriber import Subscriber

SHARDS = 4


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening (yet)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def eventually(check: Callable[[], bool], within: float = 20) -> None:
    async with asyncio.timeout(within):
        while True:
            if await asyncio.to_thread(check):
                return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_relay(relay_settings: RelaySettings) -> AsyncIterator[tuple[RelaySettings, str]]:
    """An in-process relay serving /metrics and /health on a free port."""
    settings = attrs.evolve(
        relay_settings, metrics_port=free_port(), stuck_after=1.0, shards=SHARDS
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    base = f"http://127.0.0.1:{settings.metrics_port}"
    await eventually(lambda: get(f"{base}/health")[0] == 200)
    yield settings, base
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def observed_relay(
    relay_settings: RelaySettings,
) -> AsyncIterator[tuple[RelaySettings, str]]:
    async with running_relay(relay_settings) as observed:
        yield observed


async def test_metrics_count_what_the_relay_did(
    relay_settings: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    # Everything is queued before the relay starts, so the message with a 1 ms
    # ttl is certainly older than its ttl when the relay first sees it.
    async with AsyncPublisher.from_url(relay_settings.redis_url, shards=SHARDS) as publisher:
        await publisher.publish_many([Message("obj:m", {}, f"k{i}", 1) for i in range(30)])
        await publisher.publish("nope:1", {}, key="bad", version=1)
        late = await publisher.publish("obj:m", {}, key="late", version=1, ttl_ms=1)
    await asyncio.sleep(max(0.0, (late.ts + 2) / 1000 - time.time()))
    async with running_relay(relay_settings) as (settings, base):
        await _check_metrics(settings, base)


async def _check_metrics(settings: RelaySettings, base: str) -> None:
    await wait_until_drained(settings.redis_url, SHARDS, within=20)

    def counted() -> bool:
        text = get(f"{base}/metrics")[1]
        return metric(text, "centrifugo_async_messages_published_total") >= 30

    # At least once: a batch repeated after a lease hiccup counts again.
    await eventually(counted)
    text = get(f"{base}/metrics")[1]
    assert metric(text, "centrifugo_async_messages_dead_lettered_total", reason="rejected") == 1
    assert metric(text, "centrifugo_async_messages_expired_total") == 1
    assert metric(text, "centrifugo_async_enqueue_to_accept_seconds_count") >= 30
    assert metric(text, "centrifugo_async_batch_size_count") >= 1
    assert metric(text, "centrifugo_async_centrifugo_request_seconds_count") >= 1
    await eventually(
        lambda: metric(get(f"{base}/metrics")[1], "centrifugo_async_lease_owned") == SHARDS
    )
    status, body = get(f"{base}/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


async def test_health_reports_centrifugo_down_and_stuck_shards(
    observed_relay: tuple[RelaySettings, str], centrifugo: CentrifugoServer
) -> None:
    settings, base = observed_relay
    centrifugo.stop()
    try:
        async with AsyncPublisher.from_url(settings.redis_url, shards=SHARDS) as publisher:
            await publisher.publish("obj:h", {}, key="k", version=1)

        def unhealthy() -> bool:
            status, body = get(f"{base}/health")
            problems = " ".join(json.loads(body)["problems"])
            return status == 503 and "centrifugo unreachable" in problems and "stuck" in problems

        await eventually(unhealthy)

        def retries() -> float:
            return metric(get(f"{base}/metrics")[1], "centrifugo_async_retries_total")

        assert retries() >= 1
    finally:
        centrifugo.start()
    await eventually(lambda: get(f"{base}/health")[0] == 200)


async def test_redis_restart_is_survived_without_loss(
    centrifugo: CentrifugoServer, relay_settings: RelaySettings
) -> None:
    """A Redis with an append-only file restarts mid-stream; the relay reconnects."""
    channel = "obj:redis-restart"
    batch = [Message(channel, {}, f"k{i % 20}", i // 20 + 1) for i in range(600)]
    with RedisServer(persistent=True) as redis_server:
        settings = attrs.evolve(relay_settings, redis_url=redis_server.url, shards=SHARDS)
        stop = asyncio.Event()
        async with Subscriber(centrifugo.ws_url, [channel]) as subscriber:
            relay = asyncio.create_task(serve(settings, stop=stop))
            async with AsyncPublisher.from_url(redis_server.url, shards=SHARDS) as publisher:
                await publisher.publish_many(batch[:300])
                await asyncio.to_thread(redis_server.restart)
                for attempt in range(50):  # the publisher's caller retries, as an app would
                    try:
                        await publisher.publish_many(batch[300:])
                        break
                    except Exception:
                        await asyncio.sleep(0.1 * attempt)
            received = await subscriber.wait_for(600, within=60)
            await wait_until_drained(redis_server.url, SHARDS, within=30)
            stop.set()
            await relay
    assert published_pairs(received) == {(m.key, m.version) for m in batch}
    assert order_inversions(received) == 0


async def test_late_delivery_policy_drops_only_matching_channels(
    relay_settings: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    settings = attrs.evolve(
        relay_settings,
        late_delivery=(LatePolicy("obj:typing-*", 200), LatePolicy("obj:orders-*", None)),
    )
    async with AsyncPublisher.from_url(settings.redis_url, shards=SHARDS) as publisher:
        await publisher.publish("obj:typing-1", {"typing": True}, key="u1", version=1)
        await publisher.publish("obj:orders-1", {"paid": True}, key="o1", version=1)
    await asyncio.sleep(0.4)  # both are now older than the typing policy allows
    stop = asyncio.Event()
    async with Subscriber(centrifugo.ws_url, ["obj:typing-1", "obj:orders-1"]) as subscriber:
        relay = asyncio.create_task(serve(settings, stop=stop))
        received = await subscriber.wait_for(1, within=20)
        await wait_until_drained(settings.redis_url, SHARDS, within=20)
        received = await subscriber.settle(quiet=0.3)
        stop.set()
        await relay
    assert [e["channel"] for e in received] == ["obj:orders-1"]
    client = redis.Redis.from_url(settings.redis_url)
    expired = sum(
        int(client.hget(f"{{centrifugo.publish:{s}}}:state", "expired") or 0) for s in range(SHARDS)
    )  # type: ignore[arg-type]
    assert expired == 1


async def test_version_forwarding_lets_centrifugo_drop_stale_versions(
    relay_settings: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    # Freshness "all": the relay itself sends the stale update on, for Centrifugo to drop.
    settings = attrs.evolve(
        relay_settings,
        forward_version=("obj:single-*",),
        freshness=(FreshnessRule("*", Freshness.ALL),),
    )
    channels = ["obj:single-doc", "obj:plain-doc"]
    stop = asyncio.Event()
    async with Subscriber(centrifugo.ws_url, channels) as subscriber:
        relay = asyncio.create_task(serve(settings, stop=stop))
        async with AsyncPublisher.from_url(settings.redis_url, shards=SHARDS) as publisher:
            for channel in channels:
                await publisher.publish(channel, {"v": 2}, key="doc", version=2)
                # A stale update with its own idempotency key, so only `version` can stop it.
                await publisher.publish(
                    channel, {"v": 1}, key="doc", version=1, idempotency_key=f"{channel}-late"
                )
        await wait_until_drained(settings.redis_url, SHARDS, within=20)
        received = await subscriber.settle(quiet=0.5)
        stop.set()
        await relay
    by_channel: dict[str, list[int]] = {}
    for envelope in received:
        by_channel.setdefault(envelope["channel"], []).append(envelope["version"])
    assert by_channel == {"obj:single-doc": [2], "obj:plain-doc": [2, 1]}


async def test_logs_are_json_lines_without_secrets(centrifugo: CentrifugoServer) -> None:
    password, api_key = "redis-pw-4f9a2c", "api-key-8e1d7b"
    with RedisServer(password=password) as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        async with AsyncPublisher.from_url(redis_server.url, shards=SHARDS) as publisher:
            await publisher.publish("nope:1", {}, key="k", version=1)  # will be dead-lettered
        relay = RelayProcess(
            redis_server.url,
            centrifugo.api_url,
            DEV_API_KEY,
            "--log-format",
            "json",
            "--lease-ttl",
            "1",
        )
        relay.env["CENTRIFUGO_API_KEY"] = DEV_API_KEY
        relay.start()
        try:
            await eventually(lambda: "dead-lettered" in relay.log())
            await asyncio.to_thread(redis_server.stop)  # errors that mention the connection
            await eventually(lambda: "redis error" in relay.log() or "failed" in relay.log())
            await asyncio.to_thread(redis_server.start)
            relay.signal(signal.SIGTERM)
            assert await asyncio.to_thread(relay.wait) == 0
            good_log = relay.log()
        finally:
            relay.close()
        bad_key = RelayProcess(
            redis_server.url, centrifugo.api_url, api_key, "--log-format", "json"
        )
        bad_key.start()
        try:
            assert await asyncio.to_thread(bad_key.wait) == ExitCode.FATAL
            bad_log = bad_key.log()
        finally:
            bad_key.close()
        client.close()

    records = log_records(good_log)
    assert {"time", "level", "name", "message"} <= set(records[0])
    (dead,) = [r for r in records if r["message"] == "dead-lettered"]
    assert dead["channel"] == "nope:1" and dead["reason"] == "rejected" and dead["code"] == 102
    assert dead["shard"] == shard_for("k", SHARDS) and dead["level"] == "WARNING"
    assert json_line_problems(good_log, "relay") == []
    (fatal,) = [r for r in log_records(bad_log) if r["level"] == "ERROR"]
    assert fatal["exit_code"] == ExitCode.FATAL and "API key" in fatal["error"]
    assert json_line_problems(bad_log, "relay with a bad key") == []
    for text in (good_log, bad_log):
        assert password not in text
        assert api_key not in text
        assert DEV_API_KEY not in text
