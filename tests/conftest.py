"""Shared fixtures: a real Redis, Centrifugo and PostgreSQL on loopback for the session.

``recording_proxy`` puts a recording proxy (``tests/support/relay_proxy.py``) in
front of that Centrifugo for one test: it shows what each relay sent, under which
lease, and gives every attempt its own idempotency key so re-sends stay visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import attrs
import pytest
import redis

from centrifugo_async.relay import RelaySettings, serve
from devstack import DEV_API_KEY, CentrifugoServer, PostgresServer, RedisServer
from tests.support.relay_proxy import RecordingProxy


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def centrifugo() -> Iterator[CentrifugoServer]:
    with CentrifugoServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster (initdb into a temporary folder) for the session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a fresh, empty database of the session's cluster."""
    postgres_server.start()
    return postgres_server.create_database()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis URL whose database was emptied for this test."""
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def relay_settings(redis_url: str, centrifugo: CentrifugoServer) -> RelaySettings:
    """Settings for an in-process relay, with short timers so tests stay quick."""
    centrifugo.start()
    return RelaySettings(
        metrics_port=0,
        redis_url=redis_url,
        api_url=centrifugo.api_url,
        api_key=DEV_API_KEY,
        lease_ttl=3.0,
        idle_wait=0.2,
        retry_initial=0.05,
        retry_max=0.5,
        request_timeout=2.0,
    )


@pytest.fixture
async def running_relay(relay_settings: RelaySettings) -> AsyncIterator[RelaySettings]:
    """An in-process relay (``serve()``) for the duration of the test."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(relay_settings, stop=stop))
    yield relay_settings
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def recording_proxy(
    redis_url: str, centrifugo: CentrifugoServer
) -> AsyncIterator[RecordingProxy]:
    """A recording proxy in front of the session's Centrifugo, with unique idempotency keys."""
    centrifugo.start()
    async with RecordingProxy(centrifugo.api_url, centrifugo.api_key, redis_url) as proxy:
        yield proxy
    assert proxy.problems == []


@pytest.fixture
async def proxied_relay(
    relay_settings: RelaySettings, recording_proxy: RecordingProxy
) -> AsyncIterator[RelaySettings]:
    """An in-process relay (id ``relay-in-process``) whose requests go through the proxy."""
    relay_id = "relay-in-process"
    settings = attrs.evolve(
        relay_settings, relay_id=relay_id, api_url=await recording_proxy.endpoint(relay_id)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    yield settings
    stop.set()
    await asyncio.wait_for(task, 30)
