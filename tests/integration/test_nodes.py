"""One relay, two real Centrifugo nodes sharing a Redis engine.

The relay spreads its shards over both nodes (``--api-url`` twice); a WebSocket
subscriber connected to one node sees every message, in order per key, because
the engine carries the publications the other node accepted. Stopping a node
moves its shards to the other one: nothing is lost, nothing reordered, and
nothing duplicated (idempotency results live in the shared engine).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import attrs
import pytest
import redis

from centrifugo_async import AsyncPublisher, Message
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.metrics import RelayMetrics
from centrifugo_async.relay.settings import Freshness, FreshnessRule
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer
from tests.chaos.harness import centrifugo_overrides
from tests.support.checks import order_inversions, published_pairs
from tests.support.subscriber import Subscriber

SHARDS = 8
CHANNELS = [f"obj:nodes-{n}" for n in range(4)]
KEYS = 40


@pytest.fixture(scope="module")
def engine() -> Iterator[RedisServer]:
    """The Redis both Centrifugo nodes use as their engine (not the queues' Redis)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def nodes(engine: RedisServer) -> Iterator[list[CentrifugoServer]]:
    """Two fresh Centrifugo nodes on an emptied engine (a test may stop one).

    Emptied, because the engine keeps idempotency results: the same messages
    published by an earlier test would be answered as repeats and never reach
    the subscribers.
    """
    engine.start()
    client = redis.Redis.from_url(engine.url)
    client.flushall()
    client.close()
    overrides = centrifugo_overrides(engine.url)
    first, second = (
        CentrifugoServer(extra_config=overrides),
        CentrifugoServer(extra_config=overrides),
    )
    with first, second:
        first.start()
        second.start()
        yield [first, second]


def messages(count: int, start: int = 0) -> list[Message]:
    return [
        Message(CHANNELS[i % len(CHANNELS)], {"i": i}, f"key-{i % KEYS}", i // KEYS + 1)
        for i in range(start, start + count)
    ]


def settings_for(redis_url: str, nodes: list[CentrifugoServer]) -> RelaySettings:
    return RelaySettings(
        metrics_port=0,
        redis_url=redis_url,
        api_url=",".join(node.api_url for node in nodes),
        api_key=DEV_API_KEY,
        shards=SHARDS,
        lease_ttl=3.0,
        idle_wait=0.2,
        retry_initial=0.05,
        retry_max=0.5,
        request_timeout=2.0,
    )


def requests(metrics: RelayMetrics, node: CentrifugoServer, outcome: str) -> float:
    labels = {"node": node.api_url, "outcome": outcome}
    value = metrics.registry.get_sample_value("centrifugo_async_node_requests_total", labels)
    return value or 0.0


async def publish(redis_url: str, batch: list[Message]) -> None:
    async with AsyncPublisher.from_url(redis_url, shards=SHARDS) as publisher:
        for start in range(0, len(batch), 100):
            await publisher.publish_many(batch[start : start + 100])


async def test_shards_spread_over_two_nodes_and_a_subscriber_of_one_sees_all_in_order(
    redis_url: str, nodes: list[CentrifugoServer]
) -> None:
    batch = messages(4000)
    metrics = RelayMetrics()
    stop = asyncio.Event()
    async with Subscriber(nodes[1].ws_url, CHANNELS) as subscriber:
        relay = asyncio.create_task(
            serve(settings_for(redis_url, nodes), stop=stop, metrics=metrics)
        )
        await publish(redis_url, batch)
        await subscriber.wait_for(len(batch), within=60)
        received = await subscriber.settle(quiet=0.3)
        stop.set()
        await asyncio.wait_for(relay, 30)

    assert len(received) == len(batch)
    assert published_pairs(received) == {(m.key, m.version) for m in batch}
    assert order_inversions(received) == 0
    for node in nodes:
        assert requests(metrics, node, "ok") > 1, "each node carries its shards' batches"
        assert requests(metrics, node, "failed") == 0


async def test_a_stopped_node_hands_its_shards_to_the_other_nothing_lost(
    redis_url: str, nodes: list[CentrifugoServer]
) -> None:
    survivor, stopped = nodes
    first, second = messages(2000), messages(2000, start=2000)
    metrics = RelayMetrics()
    stop = asyncio.Event()
    async with Subscriber(survivor.ws_url, CHANNELS) as subscriber:
        relay = asyncio.create_task(
            serve(settings_for(redis_url, nodes), stop=stop, metrics=metrics)
        )
        await publish(redis_url, first)
        await subscriber.wait_for(len(first), within=60)
        carried_before = requests(metrics, stopped, "ok")
        await asyncio.to_thread(stopped.stop)
        await publish(redis_url, second)
        await subscriber.wait_for(len(first) + len(second), within=60)
        received = await subscriber.settle(quiet=0.3)
        stop.set()
        await asyncio.wait_for(relay, 30)

    batch = first + second
    assert carried_before > 0, "the stopped node carried shards before it stopped"
    assert requests(metrics, stopped, "failed") > 0, "the relay noticed the stopped node"
    assert len(received) == len(batch), "nothing lost, nothing duplicated"
    assert published_pairs(received) == {(m.key, m.version) for m in batch}
    assert order_inversions(received) == 0


async def test_a_node_killed_mid_stream_loses_and_duplicates_nothing(
    redis_url: str, nodes: list[CentrifugoServer]
) -> None:
    """SIGKILL mid-stream (batches in flight to it, as a rule): they go to the other node.

    A batch the killed node applied but could not answer is sent again to the
    survivor with the same idempotency keys; the engine holds the results, so
    the repeat publishes nothing (no duplicate reaches the subscriber). Every
    version is expected, so the channels deliver every version (``all``): with
    monotonic delivery, a batch retried after an answer that never came is
    resent with only the newest version of each key (by design, see
    ``relay.freshness``).
    """
    survivor, killed = nodes
    batch = messages(20_000)
    metrics = RelayMetrics()
    stop = asyncio.Event()
    settings = attrs.evolve(
        settings_for(redis_url, nodes), freshness=(FreshnessRule("*", Freshness.ALL),)
    )
    async with Subscriber(survivor.ws_url, CHANNELS) as subscriber:
        relay = asyncio.create_task(serve(settings, stop=stop, metrics=metrics))
        publishing = asyncio.create_task(publish(redis_url, batch))
        await subscriber.wait_for(2_000, within=60)
        await asyncio.to_thread(killed.kill)
        await publishing
        await subscriber.wait_for(len(batch), within=90)
        received = await subscriber.settle(quiet=0.3)
        stop.set()
        await asyncio.wait_for(relay, 30)

    assert requests(metrics, killed, "ok") > 0 and requests(metrics, killed, "failed") > 0
    assert len(received) == len(batch), "nothing lost, nothing duplicated"
    assert published_pairs(received) == {(m.key, m.version) for m in batch}
    assert order_inversions(received) == 0
