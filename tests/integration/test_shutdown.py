"""SIGTERM ends the relay within the documented grace period, even when a peer hangs.

The grace period before a SIGKILL is ``request_timeout`` plus 10 seconds (15 s
with the defaults, docs/operations.md). A Redis that hangs (SIGSTOPped: its
port still accepts connections, nothing answers) used to hold the stop for
over a minute, one lease release after another; a Centrifugo that hangs holds
a batch for at most one request timeout.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from centrifugo_async import AsyncPublisher, Message
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess
from tests.support.fake_centrifugo import FakeCentrifugo, Hang
from tests.support.stack import shard_stats, wait_until, wait_until_drained

SHARDS = 16
GRACE = 5.0 + 10.0
"""The documented grace with the default request timeout."""


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test alone, so that it can be frozen with SIGSTOP."""
    with RedisServer() as server:
        try:
            yield server
        finally:
            server.signal(signal.SIGCONT)


async def publish(redis_url: str, count: int, keys: int) -> None:
    async with AsyncPublisher.from_url(redis_url, shards=SHARDS) as publisher:
        await publisher.publish_many(
            [
                Message("obj:shutdown", {"n": n}, f"key-{n % keys}", n // keys + 1)
                for n in range(count)
            ]
        )


async def stop_within_grace(relay: RelayProcess) -> int:
    relay.signal(signal.SIGTERM)
    return await asyncio.to_thread(relay.wait, GRACE)


async def test_sigterm_while_redis_hangs_exits_within_the_grace(
    own_redis: RedisServer, centrifugo: CentrifugoServer
) -> None:
    centrifugo.start()
    await publish(own_redis.url, 100, keys=100)
    relay = RelayProcess(own_redis.url, centrifugo.api_url, DEV_API_KEY, "--log-level", "info")
    with relay:
        relay.start()
        await wait_until_drained(own_redis.url, SHARDS, within=30)
        await wait_until(
            lambda: all(s.lease_owner for s in shard_stats(own_redis.url, SHARDS)), within=30
        )
        own_redis.signal(signal.SIGSTOP)
        assert await stop_within_grace(relay) == 0, relay.log()
        assert "relay stopped" in relay.log()
        assert "Traceback" not in relay.log()


async def test_sigterm_while_centrifugo_hangs_exits_within_the_grace(redis_url: str) -> None:
    await publish(redis_url, 20, keys=1)  # one shard, one batch
    async with FakeCentrifugo() as fake:
        fake.default = Hang()
        relay = RelayProcess(redis_url, fake.url, fake.api_key or "", "--log-level", "info")
        with relay:
            relay.start()
            await fake.wait_for(lambda: len(fake.batches) > 0, within=30)
            assert await stop_within_grace(relay) == 0, relay.log()
            assert "relay stopped" in relay.log()
    stats = shard_stats(redis_url, SHARDS)
    assert sum(s.in_flight for s in stats) == len(fake.batches[0].commands) == 20
    assert fake.accepted == []
