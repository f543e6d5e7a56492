"""The same pipeline on a real 3-node Redis Cluster (redis-cli --cluster create)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis.cluster

from centrifugo_async import AsyncPublisher, Keyspace, Message
from centrifugo_async.relay import RelaySettings, serve
from devstack import DEV_API_KEY, CentrifugoServer, RedisCluster
from tests.support.checks import order_inversions, published_pairs
from tests.support.subscriber import Subscriber

SHARDS = 8
CHANNELS = [f"obj:cluster-{n}" for n in range(4)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster(nodes=3) as running:
        yield running


def test_each_shard_lives_in_one_slot_and_shards_spread_over_nodes(cluster: RedisCluster) -> None:
    client = redis.cluster.RedisCluster.from_url(cluster.url)
    keyspace = Keyspace(shards=SHARDS)
    nodes = set()
    for keys in keyspace.all_shards():
        names = [keys.queue, keys.inflight, keys.state, keys.lease, keys.bell, keys.dlq]
        slots = {client.keyslot(name) for name in names}
        assert len(slots) == 1
        nodes.add(client.get_node_from_key(keys.queue).port)
    assert len(nodes) == 3


async def test_end_to_end_on_a_redis_cluster(
    cluster: RedisCluster, centrifugo: CentrifugoServer
) -> None:
    centrifugo.start()
    settings = RelaySettings(
        metrics_port=0,
        redis_url=cluster.url,
        redis_cluster=True,
        api_url=centrifugo.api_url,
        api_key=DEV_API_KEY,
        lease_ttl=3.0,
        idle_wait=0.2,
    )
    batch = [
        Message(CHANNELS[i % len(CHANNELS)], {"i": i}, f"key-{i % 50}", i // 50 + 1)
        for i in range(3000)
    ]
    stop = asyncio.Event()
    async with Subscriber(centrifugo.ws_url, CHANNELS) as subscriber:
        relay = asyncio.create_task(serve(settings, stop=stop))
        async with AsyncPublisher.from_url(cluster.url, cluster=True, shards=SHARDS) as publisher:
            for start in range(0, len(batch), 100):
                await publisher.publish_many(batch[start : start + 100])
            await publisher.publish("obj:cluster-0", {"single": True}, key="key-0", version=10_000)
        received = await subscriber.wait_for(len(batch) + 1, within=60)
        received = await subscriber.settle(quiet=0.3)
        stop.set()
        await relay

    assert len(received) == len(batch) + 1
    assert published_pairs(received) == {(m.key, m.version) for m in batch} | {("key-0", 10_000)}
    assert order_inversions(received) == 0

    stats = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "centrifugo_async",
            "stats",
            "--json",
            "--sample",
            "0",
            "--redis-url",
            cluster.url,
            "--redis-cluster",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    shards = json.loads(stats.stdout)["shards"]
    assert sum(s["delivered"] for s in shards) == len(batch) + 1
    assert sum(s["queued"] + s["in_flight"] for s in shards) == 0
