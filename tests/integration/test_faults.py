"""Failures of Centrifugo, of the relay and of the data: nothing is lost or reordered.

Most faults need the real Centrifugo (outages, what subscribers receive, its own
error codes); a Centrifugo that hangs is the scripted fake on loopback
(``tests/support/fake_centrifugo``), reached through the relay's own HTTP client.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from centrifugo_async import AsyncPublisher, Keyspace, Message, shard_for
from centrifugo_async.admin import iter_dead_letters
from centrifugo_async.cli import ExitCode
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.settings import Freshness, FreshnessRule
from devstack import DEV_API_KEY, CentrifugoServer, RelayProcess
from tests.support.checks import order_inversions, published_pairs
from tests.support.fake_centrifugo import FakeCentrifugo, Hang
from tests.support.logs import log_records
from tests.support.relay_proxy import ACCEPTED, RecordingProxy
from tests.support.stack import history, shard_stats, wait_until_drained
from tests.support.subscriber import Subscriber

SHARDS = 8


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher.from_url(redis_url, shards=SHARDS) as pub:
        yield pub


@pytest.fixture
def relay_processes(redis_url: str, centrifugo: CentrifugoServer) -> Iterator[list[RelayProcess]]:
    """Relays as child processes (so they can be SIGKILLed); closed after the test."""
    centrifugo.start()
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.close()


def new_relay(
    started: list[RelayProcess],
    redis_url: str,
    centrifugo: CentrifugoServer,
    api_key: str = DEV_API_KEY,
) -> RelayProcess:
    relay = RelayProcess(
        redis_url,
        centrifugo.api_url,
        api_key,
        "--lease-ttl",
        "2",
        "--log-level",
        "info",
        "--log-format",
        "json",
    )
    started.append(relay)
    return relay.start()


async def proxied_relay(
    started: list[RelayProcess], redis_url: str, proxy: RecordingProxy, relay_id: str
) -> RelayProcess:
    """A relay process that reaches Centrifugo through the recording proxy.

    It sends every version (freshness ``all``), so that a redelivered batch goes
    out whole; test_freshness.py covers redelivery with monotonic delivery.
    """
    api_url = await proxy.endpoint(relay_id)
    relay = RelayProcess(
        redis_url,
        api_url,
        DEV_API_KEY,
        "--relay-id",
        relay_id,
        "--lease-ttl",
        "2",
        "--freshness",
        "*=all",
    )
    started.append(relay)
    return relay.start()


def in_flight_seqs(redis_url: str, shard: int) -> list[int]:
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.lrange(Keyspace(shards=SHARDS).shard(shard).inflight, 0, -1)
    finally:
        client.close()
    return [json.loads(entry)["seq"] for entry in entries]


def first_arrivals(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``received`` without the repeats of a (key, version) that already arrived."""
    seen: set[tuple[str, int]] = set()
    first = []
    for envelope in received:
        if (envelope["key"], envelope["version"]) not in seen:
            seen.add((envelope["key"], envelope["version"]))
            first.append(envelope)
    return first


def messages(channels: list[str], count: int, keys: int) -> list[Message]:
    """``count`` messages over ``keys`` keys with increasing versions per key."""
    return [
        Message(channels[i % len(channels)], {"i": i}, f"key-{i % keys}", i // keys + 1)
        for i in range(count)
    ]


async def publish_steadily(
    publisher: AsyncPublisher, batch: list[Message], chunk: int = 25
) -> None:
    """Publish in small chunks with pauses, so faults can land mid-stream."""
    for start in range(0, len(batch), chunk):
        await publisher.publish_many(batch[start : start + chunk])
        await asyncio.sleep(0.01)


async def test_centrifugo_outage_loses_nothing(
    running_relay: RelaySettings, centrifugo: CentrifugoServer, publisher: AsyncPublisher
) -> None:
    channels = ["obj:outage-a", "obj:outage-b"]
    before, during = messages(channels, 200, 20), messages(channels, 1000, 20)[200:]
    await publisher.publish_many(before)
    await wait_until_drained(running_relay.redis_url, SHARDS, within=20)

    centrifugo.stop()
    try:
        await publish_steadily(publisher, during)
        await asyncio.sleep(1.0)  # the relay keeps retrying meanwhile
        stats = shard_stats(running_relay.redis_url, SHARDS)
        assert sum(s.queued + s.in_flight for s in stats) == len(during)
        assert sum(s.dead_letters for s in stats) == 0
    finally:
        centrifugo.start()

    stats = await wait_until_drained(running_relay.redis_url, SHARDS, within=30)
    assert sum(s.delivered for s in stats) == 1000
    assert sum(s.dead_letters for s in stats) == 0
    # Centrifugo restarted with empty memory: its history now holds exactly the
    # messages published during the outage, once each, in per-key order.
    delivered = [e for channel in channels for e in history(centrifugo, channel)]
    assert len(delivered) == len(during)
    assert published_pairs(delivered) == {(m.key, m.version) for m in during}
    assert order_inversions(delivered) == 0


async def test_stop_while_centrifugo_hangs_keeps_the_batch_for_the_next_start(
    redis_url: str, publisher: AsyncPublisher
) -> None:
    batch = messages(["obj:hang"], 20, 1)
    await publisher.publish_many(batch)
    async with FakeCentrifugo() as fake:
        fake.script(Hang())
        settings = RelaySettings(
            metrics_port=0,
            redis_url=redis_url,
            api_url=fake.url,
            api_key=fake.api_key or "",
            lease_ttl=3.0,
            idle_wait=0.2,
            retry_initial=0.05,
            retry_max=0.5,
            request_timeout=1.0,
            freshness=(FreshnessRule("*", Freshness.ALL),),  # the in-flight batch goes out whole
        )
        stop = asyncio.Event()
        relay = asyncio.create_task(serve(settings, stop=stop))
        await fake.wait_for(lambda: len(fake.batches) == 1, within=20)
        stop.set()
        await asyncio.wait_for(relay, 5)  # the hung request times out, no retry after stop
        stats = shard_stats(redis_url, SHARDS)
        assert sum(s.in_flight for s in stats) == len(fake.batches[0].commands) == 20
        assert sum(s.lease_owner is not None for s in stats) == 0
        assert fake.accepted == []

        stop = asyncio.Event()
        relay = asyncio.create_task(serve(settings, stop=stop))
        await wait_until_drained(redis_url, SHARDS, within=20)
        stop.set()
        await asyncio.wait_for(relay, 10)
    assert [p["data"]["version"] for p in fake.accepted] == list(range(1, 21))
    assert sum(s.delivered for s in shard_stats(redis_url, SHARDS)) == 20


async def test_relay_killed_with_a_batch_in_flight_redelivers_it_first(
    redis_url: str,
    centrifugo: CentrifugoServer,
    publisher: AsyncPublisher,
    relay_processes: list[RelayProcess],
    recording_proxy: RecordingProxy,
) -> None:
    """SIGKILL while a batch is claimed and unacknowledged: the next relay sends it first.

    The proxy holds the killed relay's request, so a batch is in flight (in the
    in-flight list, not acknowledged) when the kill lands. It gives each attempt
    its own idempotency key, so every copy Centrifugo got reaches the subscriber.
    """
    proxy = recording_proxy
    channels = [f"obj:kill-{n}" for n in range(4)]
    batch = messages(channels, 4000, 100)
    async with Subscriber(centrifugo.ws_url, channels) as subscriber:
        first = await proxied_relay(relay_processes, redis_url, proxy, "relay-killed")
        publishing = asyncio.create_task(publish_steadily(publisher, batch))
        await subscriber.wait_for(500, within=30)
        caught = await proxy.hold(relay="relay-killed").arrived(within=20)
        assert in_flight_seqs(redis_url, caught.shard) == caught.seqs != [], (
            "the batch must be claimed and not yet acknowledged when the relay dies"
        )
        first.signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
        killed_at = len(subscriber.received)
        await proxied_relay(relay_processes, redis_url, proxy, "relay-restarted")
        redelivered_first = await proxy.wait_for(
            lambda: bool(proxy.batches("relay-restarted", caught.shard)), within=20
        )
        assert redelivered_first, "the restarted relay sent nothing for the held batch's shard"
        assert proxy.batches("relay-restarted", caught.shard)[0].seqs == caught.seqs, (
            "the in-flight batch must be the first one sent after the restart"
        )
        await publishing
        await wait_until_drained(redis_url, SHARDS, within=60)
        received = await subscriber.settle(quiet=0.5)

    assert killed_at < len(batch), "the kill did not land mid-stream"
    log = proxy.log
    assert log.stale() == [] and log.duplicates() == []
    # The named repeats: what the killed relay had sent and not acknowledged,
    # redelivered by its successor as its first batch for each shard.
    redelivered = log.redeliveries()
    assert {s.position for s in redelivered} >= {(caught.shard, seq) for seq in caught.seqs}
    for send in redelivered:
        first_batch = proxy.batches("relay-restarted", send.shard)[0]
        assert send.relay == "relay-restarted" and send.request == first_batch.index
    copies = sum(
        any(e.answer == ACCEPTED for e in log.repeats()[s.position][:-1]) for s in redelivered
    )
    assert len(received) == len(batch) + copies, log.summary()
    assert published_pairs(received) == {(m.key, m.version) for m in batch}
    # A redelivered copy can follow a newer version of its key from the same
    # batch; the first arrival of every message is in per-key order.
    assert order_inversions(first_arrivals(received)) == 0
    assert sum(s.delivered for s in shard_stats(redis_url, SHARDS)) == len(batch)


async def test_sigterm_finishes_the_batch_in_flight_and_exits_zero(
    redis_url: str,
    centrifugo: CentrifugoServer,
    publisher: AsyncPublisher,
    relay_processes: list[RelayProcess],
) -> None:
    channels = ["obj:term-a", "obj:term-b"]
    batch = messages(channels, 3000, 50)
    async with Subscriber(centrifugo.ws_url, channels) as subscriber:
        relay = new_relay(relay_processes, redis_url, centrifugo)
        publishing = asyncio.create_task(publish_steadily(publisher, batch))
        await subscriber.wait_for(300, within=30)
        relay.signal(signal.SIGTERM)
        assert relay.wait() == 0, relay.log()
        stats = shard_stats(redis_url, SHARDS)
        assert sum(s.in_flight for s in stats) == 0, "a batch was left half-done"
        assert all(s.lease_owner is None for s in stats), "leases were not released"
        assert "relay stopped" in relay.log()

        await publishing
        new_relay(relay_processes, redis_url, centrifugo)
        await wait_until_drained(redis_url, SHARDS, within=60)
        received = await subscriber.settle(quiet=0.5)
    assert published_pairs(received) == {(m.key, m.version) for m in batch}
    assert len(received) == len(batch)
    assert order_inversions(received) == 0


async def test_bad_entries_are_dead_lettered_and_the_rest_delivered_in_order(
    running_relay: RelaySettings, centrifugo: CentrifugoServer, publisher: AsyncPublisher
) -> None:
    channel, key = "obj:dlq", "doc-1"
    shard = Keyspace(shards=SHARDS).shard(shard_for(key, SHARDS))
    client = redis.Redis.from_url(running_relay.redis_url)
    async with Subscriber(centrifugo.ws_url, [channel]) as subscriber:
        await publisher.publish(channel, {"n": 1}, key=key, version=1)
        client.rpush(shard.queue, b"not an envelope at all", b'{"v":9}', b"\xff\xfe")
        await publisher.publish(channel, {"n": 2}, key=key, version=2)
        await publisher.publish("nope:1", {"n": 3}, key=key, version=3)
        await publisher.publish(channel, {"n": 4}, key=key, version=4)
        received = await subscriber.wait_for(3, within=20)
        await wait_until_drained(running_relay.redis_url, SHARDS, within=20)

    assert [e["version"] for e in received] == [1, 2, 4]
    letters = [e.letter for e in iter_dead_letters(client, Keyspace(shards=SHARDS))]
    assert [(letter.reason, letter.code) for letter in letters if letter] == [
        ("invalid_envelope", None),
        ("invalid_envelope", None),
        ("invalid_unicode", None),
        ("rejected", 102),
    ]
    originals = [letter.original for letter in letters if letter]
    assert originals[:3] == [b"not an envelope at all", b'{"v":9}', b"\xff\xfe"]
    assert "major version v=9" in letters[1].error  # type: ignore[union-attr]
    assert letters[3].channel == "nope:1" and letters[3].error == "unknown channel"  # type: ignore[union-attr]
    assert b'"version":3' in originals[3]


async def test_wrong_api_key_stops_the_relay_and_leaves_the_queue_intact(
    redis_url: str,
    centrifugo: CentrifugoServer,
    publisher: AsyncPublisher,
    relay_processes: list[RelayProcess],
) -> None:
    await publisher.publish_many(messages(["obj:key"], 50, 5))
    relay = new_relay(relay_processes, redis_url, centrifugo, api_key="wrong-key")
    assert relay.wait() == ExitCode.FATAL
    assert "Centrifugo rejected the API key (HTTP 401)" in relay.log()
    assert "Traceback" not in relay.log()
    stats = shard_stats(redis_url, SHARDS)
    assert sum(s.queued for s in stats) == 50
    assert sum(s.in_flight + s.dead_letters + s.delivered for s in stats) == 0


async def test_expired_messages_are_counted_not_delivered(
    relay_settings: RelaySettings, centrifugo: CentrifugoServer, publisher: AsyncPublisher
) -> None:
    channel = "obj:ttl"
    await publisher.publish(channel, {"late": True}, key="typing", version=1, ttl_ms=100)
    await publisher.publish(channel, {"late": False}, key="typing", version=2, ttl_ms=60_000)
    await publisher.publish(channel, {"late": False}, key="other", version=1)
    await asyncio.sleep(0.3)
    stop = asyncio.Event()
    async with Subscriber(centrifugo.ws_url, [channel]) as subscriber:
        relay = asyncio.create_task(serve(relay_settings, stop=stop))
        received = await subscriber.wait_for(2, within=20)
        await wait_until_drained(relay_settings.redis_url, SHARDS, within=20)
        await subscriber.settle(quiet=0.3)
        stop.set()
        await relay
    assert sorted((e["key"], e["version"]) for e in received) == [("other", 1), ("typing", 2)]
    stats = shard_stats(relay_settings.redis_url, SHARDS)
    assert (sum(s.expired for s in stats), sum(s.delivered for s in stats)) == (1, 2)


async def test_relays_share_the_shards_evenly_and_take_over_from_the_dead(
    redis_url: str,
    centrifugo: CentrifugoServer,
    publisher: AsyncPublisher,
    relay_processes: list[RelayProcess],
) -> None:
    await publisher.publish("obj:group", {}, key="k", version=1)
    first = new_relay(relay_processes, redis_url, centrifugo)
    await wait_for_shares(redis_url, [8])
    second = new_relay(relay_processes, redis_url, centrifugo)
    await wait_for_shares(redis_url, [4, 4])
    third = new_relay(relay_processes, redis_url, centrifugo)
    await wait_for_shares(redis_url, [2, 3, 3])
    assert "handing over" in first.log()

    first.signal(signal.SIGTERM)  # leaves: its leases are released at once
    assert first.wait() == 0
    await wait_for_shares(redis_url, [4, 4])
    second.signal(signal.SIGKILL)  # dies: its leases expire
    second.wait()
    await wait_for_shares(redis_url, [8])
    owners = {s.lease_owner for s in shard_stats(redis_url, SHARDS)}
    assert len(owners) == 1 and owners <= {third_id(third)}

    async with Subscriber(centrifugo.ws_url, ["obj:group"]) as subscriber:
        await publisher.publish("obj:group", {}, key="k", version=2)
        (envelope,) = await subscriber.wait_for(1, within=10)
    assert envelope["version"] == 2


def third_id(relay: RelayProcess) -> str:
    """The relay id a child process announced in its start-up log line."""
    started = next(r for r in log_records(relay.log()) if r["message"] == "relay started")
    return str(started["relay"])


async def wait_for_shares(redis_url: str, shares: list[int], within: float = 20) -> None:
    """Wait until the shard counts per owning relay are ``shares`` (sorted)."""
    async with asyncio.timeout(within):
        while True:
            owners = Counter(s.lease_owner for s in shard_stats(redis_url, SHARDS))
            if None not in owners and sorted(owners.values()) == shares:
                return
            await asyncio.sleep(0.1)
