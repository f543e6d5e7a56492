"""Changing the shard count never reorders a key, and is refused when unsafe."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import redis

from centrifugo_async import (
    AsyncPublisher,
    Message,
    Publisher,
    ReshardRefused,
    TopologyMismatch,
)
from centrifugo_async.admin import reshard
from centrifugo_async.relay import RelaySettings
from devstack import CentrifugoServer
from tests.support.checks import order_inversions, published_pairs
from tests.support.stack import shard_stats
from tests.support.subscriber import Subscriber

CHANNEL = "obj:reshard"


def updates(first: int, last: int) -> list[Message]:
    return [
        Message(CHANNEL, {"v": v}, f"k{k}", v) for v in range(first, last + 1) for k in range(20)
    ]


async def test_reshard_under_a_running_relay_keeps_per_key_order(
    running_relay: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    url = running_relay.redis_url
    async with Subscriber(centrifugo.ws_url, [CHANNEL]) as subscriber:
        async with AsyncPublisher.from_url(url, shards=4) as old:
            for start in range(0, 1000, 100):
                await old.publish_many(updates(1, 50)[start : start + 100])
        # Publishers stopped; the relay is still draining while the reshard waits.
        resharded = await asyncio.to_thread(
            reshard, redis.Redis.from_url(url), "centrifugo.publish", 8
        )
        assert resharded.shards == 8

        with pytest.raises(TopologyMismatch, match="shards=8"):
            await AsyncPublisher.from_url(url, shards=4).publish(CHANNEL, {}, key="k0", version=99)
        async with AsyncPublisher.from_url(url, shards=8) as new:
            await new.publish_many(updates(51, 100))
        received = await subscriber.wait_for(2000, within=60)
        received = await subscriber.settle(quiet=0.3)

    assert len(received) == 2000
    assert published_pairs(received) == {(m.key, m.version) for m in updates(1, 100)}
    assert order_inversions(received) == 0
    async with asyncio.timeout(20):  # the relay switched to the new shards by itself
        while True:
            stats = shard_stats(url, 8)
            if all(s.lease_owner for s in stats):
                break
            await asyncio.sleep(0.1)
    assert sum(s.delivered for s in stats) == 2000


def test_reshard_is_refused_while_shards_hold_messages(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with Publisher(client, shards=4) as publisher:
        envelope = publisher.publish(CHANNEL, {}, key="k1", version=1)
    with pytest.raises(ReshardRefused, match=rf"shards \[{envelope.shard}\] still hold messages"):
        reshard(client, "centrifugo.publish", 8, timeout=0.3)
    # Nothing changed: the old count still publishes everywhere, the new one is refused.
    with Publisher(client, shards=4) as publisher:
        publisher.publish_many([Message(CHANNEL, {}, f"k{i}", 2) for i in range(50)])
    with pytest.raises(TopologyMismatch):
        Publisher(client, shards=8).publish(CHANNEL, {}, key="k1", version=3)


def test_reshard_command(redis_url: str) -> None:
    Publisher.from_url(redis_url, shards=4).ensure_topology()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "centrifugo_async", "reshard", "--redis-url", redis_url, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    same = run("--shards", "4")
    assert same.returncode == 0 and "nothing to do" in same.stdout
    changed = run("--shards", "2")
    assert changed.returncode == 0 and "4 -> 2 shards" in changed.stdout
    assert int(redis.Redis.from_url(redis_url).hget("{centrifugo.publish}:meta", "shards")) == 2  # type: ignore[arg-type]

    Publisher.from_url(redis_url, shards=2).publish(CHANNEL, {}, key="k", version=1)
    refused = run("--shards", "3", "--timeout", "0.2")
    assert refused.returncode == 1
    assert "still hold messages" in refused.stderr and "Traceback" not in refused.stderr
