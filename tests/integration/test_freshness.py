"""Monotonic delivery and latest-wins, end to end: no key ever goes backwards at the relay.

Every subscriber here is a plain WebSocket client (``tests/support/subscriber.py``)
with no version gate: what it receives is what Centrifugo published, in order.
With monotonic delivery (the default) the relay never sends a (channel, key)
version that is not newer than the last one it delivered: not when a dead
letter is replayed, not when an in-flight batch is redelivered after Centrifugo
forgot its idempotency keys, not when a command answered with code 100 is
retried after a newer version of its key was accepted, not when a batch is
resent after an answer that says nothing certain. Latest-wins sends only
the newest version of each key it has in hand, so a backlog collapses to about
one publication per key.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Iterator

import attrs
import pytest
import redis
from click.testing import CliRunner

from centrifugo_async import DeadLetter, Keyspace, Message, Publisher, encode_envelope
from centrifugo_async.cli import main
from centrifugo_async.protocol.deadletter import encode_dead_letter
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.metrics import RelayMetrics
from centrifugo_async.relay.settings import Freshness, FreshnessRule
from devstack import DEV_API_KEY, CentrifugoServer, RelayProcess
from tests.support.checks import order_inversions, versions_by_key
from tests.support.fake_centrifugo import Behaviour, Drop, FakeCentrifugo, ReplyErrors, Status
from tests.support.relay_proxy import ACCEPTED, RecordingProxy
from tests.support.stack import history, shard_stats, wait_until, wait_until_drained
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration

SHARDS = 1


def publish(redis_url: str, messages: list[Message]) -> None:
    with Publisher.from_url(redis_url, shards=SHARDS) as publisher:
        publisher.publish_many(messages)


def updates(channel: str, key: str, versions: range) -> list[Message]:
    return [Message(channel, {"v": v}, key, v) for v in versions]


def dead_letter(redis_url: str, messages: list[Message]) -> None:
    """Put ``messages`` into the dead-letter list, as if Centrifugo had rejected them."""
    client = redis.Redis.from_url(redis_url)
    keys = Keyspace(shards=SHARDS).shard(0)
    with Publisher(client, shards=SHARDS) as publisher:
        envelopes = publisher.publish_many(messages)
    client.delete(keys.queue)
    for envelope in envelopes:
        letter = DeadLetter.for_payload(
            encode_envelope(envelope),
            shard=0,
            reason="rejected",
            error="temporarily unavailable",
            code=108,
            channel=envelope.channel,
        )
        client.rpush(keys.dlq, encode_dead_letter(letter))
    client.close()


def superseded(redis_url: str) -> int:
    return sum(s.superseded for s in shard_stats(redis_url, SHARDS))


def metric_total(metrics: RelayMetrics, name: str) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    )


async def run_relay_until_drained(settings: RelaySettings, within: float = 20) -> None:
    stop = asyncio.Event()
    relay = asyncio.create_task(serve(settings, stop=stop))
    try:
        await wait_until_drained(settings.redis_url, SHARDS, within=within)
    finally:
        stop.set()
        await asyncio.wait_for(relay, 30)


async def test_a_dead_letter_replay_after_newer_versions_never_moves_a_key_backwards(
    relay_settings: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    """The issue's history ``[6, 7, 8, 1, 2, 3, 4, 5]``: versions 1..5 were dead-lettered,
    6..8 delivered since, then the dead letters are replayed. The relay that delivered
    6..8 has stopped meanwhile: what stops 1..5 is the memory in Redis."""
    channel = "obj:replay-monotonic"
    settings = attrs.evolve(relay_settings, shards=SHARDS)
    redis_url = settings.redis_url
    dead_letter(redis_url, [*updates(channel, "doc", range(1, 6)), Message(channel, {}, "new", 1)])
    async with Subscriber(centrifugo.ws_url, [channel]) as subscriber:
        publish(redis_url, updates(channel, "doc", range(6, 9)))
        await run_relay_until_drained(settings)
        await subscriber.wait_for(3, within=10)

        replay = CliRunner().invoke(main, ["dlq", "replay", "--redis-url", redis_url])
        assert replay.exit_code == 0, replay.output
        assert "replayed 6 of 6 matching dead letters" in replay.stdout
        await run_relay_until_drained(settings)
        await subscriber.wait_for(4, within=10)
        received = await subscriber.settle(quiet=0.5)

    assert versions_by_key(received) == {"doc": [6, 7, 8], "new": [1]}
    assert order_inversions(received) == 0
    assert [(e["key"], e["version"]) for e in history(centrifugo, channel)] == [
        ("doc", 6),
        ("doc", 7),
        ("doc", 8),
        ("new", 1),
    ]
    assert superseded(redis_url) == 5
    assert sum(s.delivered for s in shard_stats(redis_url, SHARDS)) == 4


@pytest.fixture
def relay_processes(centrifugo: CentrifugoServer) -> Iterator[list[RelayProcess]]:
    centrifugo.start()
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        if relay.running():
            relay.signal(signal.SIGCONT)
        relay.close()


async def proxied_relay(
    started: list[RelayProcess], redis_url: str, proxy: RecordingProxy, relay_id: str
) -> RelayProcess:
    relay = RelayProcess(
        redis_url,
        await proxy.endpoint(relay_id),
        DEV_API_KEY,
        "--relay-id",
        relay_id,
        "--lease-ttl",
        "2",
        "--shards",
        str(SHARDS),
    )
    started.append(relay)
    return relay.start()


async def test_a_redelivery_past_the_idempotency_window_never_goes_backwards(
    redis_url: str,
    centrifugo: CentrifugoServer,
    recording_proxy: RecordingProxy,
    relay_processes: list[RelayProcess],
) -> None:
    """Centrifugo publishes a batch, the relay dies before its ack, and the next relay
    sends the in-flight batch again after Centrifugo's idempotency window (the proxy
    gives every attempt its own idempotency key, as a restarted memory-engine
    Centrifugo or a 5-minute pause would): only the newest version of each key in it
    goes out again, so nothing older follows what was published."""
    proxy, channel = recording_proxy, "obj:redeliver-monotonic"
    batch = [*updates(channel, "doc", range(1, 6)), *updates(channel, "other", range(1, 3))]
    async with Subscriber(centrifugo.ws_url, [channel]) as subscriber:
        first = await proxied_relay(relay_processes, redis_url, proxy, "relay-dies")
        await wait_until(lambda: shard_stats(redis_url, SHARDS)[0].lease_owner is not None, 20)
        held = proxy.hold(relay="relay-dies")
        publish(redis_url, batch)
        caught = await held.arrived(within=20)
        assert caught.seqs == list(range(1, 8))
        first.signal(signal.SIGSTOP)  # it never reads the answer, so it never acknowledges
        held.forward()
        assert await proxy.wait_for(lambda: all(s.answer == ACCEPTED for s in caught.sends), 10)
        await subscriber.wait_for(len(batch), within=10)
        first.signal(signal.SIGKILL)
        first.wait()

        await proxied_relay(relay_processes, redis_url, proxy, "relay-next")
        assert await proxy.wait_for(lambda: bool(proxy.batches("relay-next")), within=20)
        await wait_until_drained(redis_url, SHARDS, within=20)
        received = await subscriber.settle(quiet=0.5)

    (redelivered,) = proxy.batches("relay-next")
    assert [(s.key, s.version) for s in redelivered.sends] == [("doc", 5), ("other", 2)]
    assert versions_by_key(received) == {"doc": [1, 2, 3, 4, 5, 5], "other": [1, 2, 2]}
    assert order_inversions(received) == 0
    assert superseded(redis_url) == 5


@pytest.fixture
async def fake() -> AsyncIterator[FakeCentrifugo]:
    async with FakeCentrifugo() as server:
        yield server


def fake_settings(redis_url: str, fake: FakeCentrifugo, **changes: object) -> RelaySettings:
    return RelaySettings(
        metrics_port=0,
        redis_url=redis_url,
        api_url=fake.url,
        api_key=fake.api_key or "",
        shards=SHARDS,
        lease_ttl=3.0,
        idle_wait=0.1,
        retry_initial=0.01,
        retry_max=0.05,
        **changes,  # type: ignore[arg-type]
    )


def accepted(fake: FakeCentrifugo) -> list[tuple[str, int]]:
    return [(p["data"]["key"], p["data"]["version"]) for p in fake.accepted]


async def test_after_a_code_100_only_what_is_still_newest_is_retried(
    redis_url: str, fake: FakeCentrifugo
) -> None:
    """``[a@1, b@1, a@2]`` answered ``[100, 100, ok]``: Centrifugo accepted a@2, so a@1
    is superseded and only b@1 goes out again."""
    channel = "obj:code-100"
    publish(redis_url, [Message(channel, {}, "a", 1), Message(channel, {}, "b", 1)])
    publish(redis_url, [Message(channel, {}, "a", 2)])  # all three are one batch
    fake.script(ReplyErrors({0: 100, 1: 100}))
    metrics = RelayMetrics()
    stop = asyncio.Event()
    relay = asyncio.create_task(serve(fake_settings(redis_url, fake), stop=stop, metrics=metrics))
    try:
        await wait_until_drained(redis_url, SHARDS, within=20)
    finally:
        stop.set()
        await relay
    sent = [
        [(p["data"]["key"], p["data"]["version"]) for p in r.publications] for r in fake.batches
    ]
    assert sent == [[("a", 1), ("b", 1), ("a", 2)], [("b", 1)]]
    assert accepted(fake) == [("a", 2), ("b", 1)]
    (stats,) = shard_stats(redis_url, SHARDS)
    assert (stats.delivered, stats.superseded) == (2, 1)
    assert metric_total(metrics, "centrifugo_async_messages_superseded_total") == 1
    assert metric_total(metrics, "centrifugo_async_retries_total") == 1


@pytest.mark.parametrize("failure", [Status(503), Drop()], ids=["http-503", "connection-lost"])
async def test_a_batch_resent_after_an_uncertain_answer_is_sent_latest_wins(
    redis_url: str, fake: FakeCentrifugo, failure: Behaviour
) -> None:
    """No answer, or a failure, says nothing of what Centrifugo published: a Centrifugo
    that published the batch and died before answering has forgotten its idempotency
    keys when the retry comes. So only the newest version of each key goes out again."""
    publish(
        redis_url, [*updates("obj:uncertain", "doc", range(1, 6)), Message("obj:u", {}, "o", 1)]
    )
    fake.script(failure)
    await run_relay_until_drained(fake_settings(redis_url, fake))
    assert [len(b.publications) for b in fake.batches] == [6, 2]
    assert accepted(fake) == [("doc", 5), ("o", 1)]
    assert superseded(redis_url) == 4


async def test_leftovers_in_flight_are_sent_latest_wins(
    redis_url: str, fake: FakeCentrifugo
) -> None:
    """A relay that died mid-batch may have published any part of it: the next one
    sends only the newest version of each key in it, then the queue as usual."""
    publish(redis_url, updates("obj:left", "doc", range(1, 7)))
    client = redis.Redis.from_url(redis_url)
    keys = Keyspace(shards=SHARDS).shard(0)
    for _ in range(3):  # what the dead relay had claimed
        client.lmove(keys.queue, keys.inflight, "LEFT", "RIGHT")
    client.close()
    await run_relay_until_drained(fake_settings(redis_url, fake))
    assert accepted(fake) == [("doc", 3), ("doc", 4), ("doc", 5), ("doc", 6)]
    assert superseded(redis_url) == 2


async def test_a_latest_channel_catches_up_with_one_publication_per_key(
    redis_url: str, fake: FakeCentrifugo, caplog: pytest.LogCaptureFixture
) -> None:
    """A backlog of 2,000 updates over 10 keys on a latest channel, claimed 50 at a time:
    the look-ahead finds a newer queued version for all but the last of each key, and
    drops most of them from the head of the queue without claiming them. A monotonic
    channel in the same backlog keeps every version."""
    caplog.set_level(logging.INFO, logger="centrifugo_async.relay")
    cursor = [Message("cursor:1", {}, f"k{i % 10}", i // 10 + 1) for i in range(2000)]
    orders = updates("obj:orders", "o", range(1, 21))
    publish(redis_url, [*cursor[:1000], *orders, *cursor[1000:]])
    settings = fake_settings(
        redis_url,
        fake,
        max_batch=50,
        freshness=(FreshnessRule("cursor:*", Freshness.LATEST),),
    )
    await run_relay_until_drained(settings)
    by_key = versions_by_key(p["data"] for p in fake.accepted)
    assert by_key == {**{f"k{n}": [200] for n in range(10)}, "o": list(range(1, 21))}
    assert superseded(redis_url) == 1990
    dropped = [r.count for r in caplog.records if r.getMessage() == "superseded"]  # type: ignore[attr-defined]
    assert max(dropped) > 50, "dropped without a claim (a claim holds 50 at most)"


async def test_without_look_ahead_latest_dedupes_each_batch_only(
    redis_url: str, fake: FakeCentrifugo
) -> None:
    cursor = [Message("cursor:1", {}, f"k{i % 10}", i // 10 + 1) for i in range(200)]
    publish(redis_url, cursor)
    settings = fake_settings(
        redis_url,
        fake,
        max_batch=50,
        latest_lookahead=0,
        freshness=(FreshnessRule("cursor:*", Freshness.LATEST),),
    )
    await run_relay_until_drained(settings)
    by_key = versions_by_key(p["data"] for p in fake.accepted)
    assert by_key == {f"k{n}": [5, 10, 15, 20] for n in range(10)}
    assert superseded(redis_url) == 160


async def test_a_newer_version_that_may_expire_does_not_supersede(
    redis_url: str, fake: FakeCentrifugo
) -> None:
    """A queued version with a ttl could expire before it is sent: it stands in for nothing."""
    with Publisher.from_url(redis_url, shards=SHARDS) as publisher:
        publisher.publish("cursor:1", {}, key="k", version=1)
        # Expired by the time the relay (started below) claims it.
        publisher.publish("cursor:1", {}, key="k", version=2, ttl_ms=1)
    settings = fake_settings(
        redis_url, fake, max_batch=1, freshness=(FreshnessRule("cursor:*", Freshness.LATEST),)
    )
    await run_relay_until_drained(settings)
    assert accepted(fake) == [("k", 1)]
    (stats,) = shard_stats(redis_url, SHARDS)
    assert (stats.delivered, stats.expired, stats.superseded) == (1, 1, 0)
