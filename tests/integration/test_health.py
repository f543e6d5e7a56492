"""``/health`` does not stay green on a stuck relay; ``/livez`` watches the event loop alone."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
import redis

from centrifugo_async import Keyspace, Publisher
from centrifugo_async._clock import now_ms
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.health import HealthState, loop_responds
from devstack import free_port
from tests.support.fake_centrifugo import FakeCentrifugo, Hang

SHARDS = 4


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""


async def health(base: str) -> tuple[int, list[str]]:
    status, body = await asyncio.to_thread(get, f"{base}/health")
    return status, json.loads(body)["problems"] if body else []


@pytest.fixture
async def fake() -> AsyncIterator[FakeCentrifugo]:
    async with FakeCentrifugo() as server:
        yield server


def settings_for(redis_url: str, fake: FakeCentrifugo, **changes: object) -> RelaySettings:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "api_url": fake.url,
        "api_key": fake.api_key or "",
        "metrics_port": free_port(),
        "lease_ttl": 3.0,
        "idle_wait": 0.2,
        "shards": SHARDS,
        **changes,
    }
    return RelaySettings(**values)  # type: ignore[arg-type]


async def polled(condition: object, base: str, within: float = 20) -> list[str]:
    """Poll /health until ``condition(status, problems)``; the last problems."""
    last: list[str] = []
    async with asyncio.timeout(within):
        while True:
            status, last = await health(base)
            if condition(status, last):  # type: ignore[operator]
                return last
            await asyncio.sleep(0.1)


async def test_a_stale_sample_turns_health_red_while_livez_stays_green(
    redis_url: str, fake: FakeCentrifugo
) -> None:
    settings = settings_for(redis_url, fake, request_timeout=60.0)
    base = f"http://127.0.0.1:{settings.metrics_port}"
    stop = asyncio.Event()
    relay = asyncio.create_task(serve(settings, stop=stop))
    try:
        await polled(lambda status, _: status == 200, base)
        fake.probe = Hang()  # the sampler's probe of Centrifugo never returns
        problems = await polled(lambda status, _: status == 503, base)
        assert len(problems) == 1 and problems[0].startswith("last sample is"), problems
        assert "stuck on Redis, Centrifugo or its event loop" in problems[0]
        assert await asyncio.to_thread(get, f"{base}/livez") == (200, "ok\n")
    finally:
        stop.set()
        await asyncio.wait_for(relay, 20)


async def test_owning_nothing_while_shards_have_no_owner_is_unhealthy(
    redis_url: str, fake: FakeCentrifugo
) -> None:
    """Ghost members (relays that stopped heartbeating only in their own minds) make
    this relay's fair share zero: it takes nothing, and nobody else does either."""
    client = redis.Redis.from_url(redis_url)
    Publisher(client, shards=SHARDS).ensure_topology()
    relays = Keyspace(shards=SHARDS).relays
    ghosts = {f"ghost-{n:03}": now_ms() + 600_000 for n in range(SHARDS * 2)}
    client.zadd(relays, ghosts)
    settings = settings_for(redis_url, fake, relay_id="zz-relay")
    base = f"http://127.0.0.1:{settings.metrics_port}"
    stop = asyncio.Event()
    relay = asyncio.create_task(serve(settings, stop=stop))
    try:
        problems = await polled(lambda _, p: any(x.startswith("holds no lease") for x in p), base)
        assert problems == [
            f"holds no lease while {SHARDS} shards have no owner: it cannot take them"
        ]
        client.zrem(relays, *ghosts)
        await polled(lambda status, _: status == 200, base)
    finally:
        stop.set()
        await asyncio.wait_for(relay, 20)
        client.close()


async def test_a_relay_in_a_full_group_is_healthy_with_no_shards(
    redis_url: str, fake: FakeCentrifugo
) -> None:
    first = settings_for(redis_url, fake, relay_id="relay-a")
    second = settings_for(redis_url, fake, relay_id="relay-b", shards=None)
    stops = [asyncio.Event(), asyncio.Event()]
    relays = [
        asyncio.create_task(serve(s, stop=e)) for s, e in zip((first, second), stops, strict=True)
    ]
    try:
        await polled(lambda status, _: status == 200, f"http://127.0.0.1:{first.metrics_port}")
        await polled(lambda status, _: status == 200, f"http://127.0.0.1:{second.metrics_port}")
    finally:
        for event in stops:
            event.set()
        await asyncio.wait_for(asyncio.gather(*relays), 20)


def test_health_state_reports_an_old_sample() -> None:
    state = HealthState("r", sample_interval=2.0, redis_ok=True, centrifugo_ok=True, owned=1)
    state.sampled_at = 1000.0
    assert state.report(now=1005.9)[0]
    healthy, body = state.report(now=1006.1)
    assert not healthy and body["problems"][0].startswith("last sample is 6.1s old")


async def test_livez_fails_when_the_event_loop_is_blocked() -> None:
    loop = asyncio.get_running_loop()
    assert await asyncio.to_thread(loop_responds, loop, 2.0)
    answers: list[bool] = []
    probe = threading.Thread(target=lambda: answers.append(loop_responds(loop, 0.2)))
    probe.start()
    time.sleep(1.0)  # noqa: ASYNC251 -- the fault: the loop's thread is stuck in blocking code
    probe.join(5)
    assert answers == [False]
