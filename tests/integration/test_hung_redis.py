"""A Redis that stops answering (SIGSTOP): every publisher call gives up, none blocks forever.

The kernel still accepts connections for a stopped redis-server and keeps the
bytes sent to it, so neither connecting nor writing fails: only a timeout on
each reply can end the call. ``Publisher.from_url`` sets one (and no retries);
these tests give it 0.5 s and allow a generous bound, only to tell "gives up"
from "hangs".
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

from centrifugo_async import AsyncPublisher, Message, Publisher, QueueUnavailable
from centrifugo_async.connection import DEFAULT_TIMEOUT
from devstack import RedisServer

pytestmark = pytest.mark.integration

TIMEOUT = 0.5
GIVES_UP_WITHIN = 6 * TIMEOUT
"""Far above the timeout (plus one connection attempt), far below "forever"."""


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as redis_server:
        yield redis_server


@contextlib.contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """The server process frozen with SIGSTOP, thawed on the way out whatever happens."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_publish_on_a_hung_redis_raises_queue_unavailable(server: RedisServer) -> None:
    with Publisher.from_url(server.url, shards=4, timeout=TIMEOUT) as publisher:
        publisher.publish("obj:1", {}, key="k", version=1)
        with stopped(server):
            for call in (
                lambda: publisher.publish("obj:1", {}, key="k", version=2),
                lambda: publisher.publish_many(
                    [Message("obj:1", {}, f"k{i}", 3) for i in range(50)]
                ),
            ):
                started = time.monotonic()
                with pytest.raises(QueueUnavailable, match=r"[Tt]imeout"):
                    call()
                assert time.monotonic() - started < GIVES_UP_WITHIN
        assert publisher.publish("obj:1", {}, key="k", version=4).version == 4, "recovers"


def test_a_new_publisher_on_a_hung_redis_gives_up_too(server: RedisServer) -> None:
    with stopped(server):
        publisher = Publisher.from_url(server.url, shards=4, timeout=TIMEOUT)
        started = time.monotonic()
        with pytest.raises(QueueUnavailable):
            publisher.publish("obj:1", {}, key="k", version=1)
        assert time.monotonic() - started < GIVES_UP_WITHIN
        publisher.close()


async def test_the_async_twin_gives_up_too(server: RedisServer) -> None:
    async with AsyncPublisher.from_url(server.url, shards=4, timeout=TIMEOUT) as publisher:
        await publisher.publish("obj:1", {}, key="k", version=1)
        with stopped(server):
            started = time.monotonic()
            with pytest.raises(QueueUnavailable, match=r"[Tt]imeout"):
                await publisher.publish("obj:1", {}, key="k", version=2)
            assert time.monotonic() - started < GIVES_UP_WITHIN


def test_the_default_timeout_is_set_on_every_connection(server: RedisServer) -> None:
    for cls in (Publisher, AsyncPublisher):
        publisher = cls.from_url(server.url, shards=4)
        pool = publisher._redis.connection_pool  # type: ignore[union-attr]
        assert pool.connection_kwargs["socket_timeout"] == DEFAULT_TIMEOUT == 5.0
        assert pool.connection_kwargs["socket_connect_timeout"] == DEFAULT_TIMEOUT


def test_a_timeout_that_is_not_a_positive_number_is_refused(server: RedisServer) -> None:
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number of seconds"):
            Publisher.from_url(server.url, timeout=bad)
