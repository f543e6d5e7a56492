"""Fencing, end to end: a relay that lost its lease sends nothing and acknowledges nothing.

Two relay processes share one shard through the recording proxy
(``tests/support/relay_proxy.py``), which shows what each of them sent and under
which lease. The first one claims a batch and sends it; the proxy holds the
request, so the batch is claimed and not acknowledged. Then the relay is
SIGSTOPped past its lease TTL, the second relay takes the shard over and
redelivers the in-flight batch, and the first one is resumed. These are the
tests docs/scaling.md's fencing argument points to.

The relay ids sort so that the new owner keeps the single shard once both are
in the group (``fair_share``): anything the resumed relay sends is stale.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from centrifugo_async import AsyncPublisher, Keyspace, Message
from centrifugo_async.protocol.scripts import ACK
from devstack import DEV_API_KEY, CentrifugoServer, RelayProcess
from tests.support.logs import logged
from tests.support.redis_monitor import RedisMonitor
from tests.support.relay_proxy import PENDING, RecordingProxy
from tests.support.stack import wait_until_drained
from tests.support.subscriber import Subscriber

SHARD = Keyspace(shards=1).shard(0)
STALE = "relay-stale"
NEW = "relay-new"
LEASE_TTL = 2.0
BATCH = 5

pytestmark = pytest.mark.integration


@pytest.fixture
def relays(centrifugo: CentrifugoServer) -> Iterator[list[RelayProcess]]:
    centrifugo.start()
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        if relay.running():
            relay.signal(signal.SIGCONT)
        relay.close()


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[AsyncPublisher]:
    # The scripts are loaded up front so that the monitor sees each relay's
    # EVALSHA succeed at once (no NOSCRIPT round before it).
    client = redis.Redis.from_url(redis_url)
    client.script_load(ACK.source)
    client.close()
    async with AsyncPublisher.from_url(redis_url, shards=1) as pub:
        yield pub


async def start_relay(
    relays: list[RelayProcess], proxy: RecordingProxy, redis_url: str, relay_id: str
) -> RelayProcess:
    relay = RelayProcess(
        redis_url,
        await proxy.endpoint(relay_id),
        DEV_API_KEY,
        "--relay-id",
        relay_id,
        "--lease-ttl",
        str(LEASE_TTL),
        # Long enough that the resumed relay reads the answer the proxy gave
        # while it was stopped, instead of timing out first.
        "--request-timeout",
        "30",
        "--log-level",
        "info",
        "--log-format",
        "json",
    )
    relays.append(relay)
    return relay.start()


def messages(channel: str, versions: range) -> list[Message]:
    """One key per message: the relay's monotonic delivery (the default) then drops
    nothing, not even from a redelivered batch, and every send stays visible."""
    return [Message(channel, {"v": v}, f"doc-{v}", v) for v in versions]


def in_flight_seqs(redis_url: str) -> list[int]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(entry)["seq"] for entry in client.lrange(SHARD.inflight, 0, -1)]
    finally:
        client.close()


def delivered_count(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.hget(SHARD.state, "delivered") or 0)
    finally:
        client.close()


async def poll(condition: Callable[[], object], within: float, what: str) -> None:
    """Wait until ``condition()`` is true, checking every 50 ms; fail naming ``what``."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if condition():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} (within {within} s)")
        await asyncio.sleep(0.05)


async def owner_is(redis_url: str, relay_id: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        await poll(
            lambda: (client.get(SHARD.lease) or b"").startswith(f"{relay_id}#".encode()),
            within=20,
            what=f"{relay_id} never took the shard's lease",
        )
    finally:
        client.close()


async def test_a_paused_relay_sends_nothing_after_losing_its_lease(
    redis_url: str,
    centrifugo: CentrifugoServer,
    recording_proxy: RecordingProxy,
    relays: list[RelayProcess],
    publisher: AsyncPublisher,
) -> None:
    proxy, channel = recording_proxy, "obj:fence-send"
    async with Subscriber(centrifugo.ws_url, [channel]) as subscriber:
        stale = await start_relay(relays, proxy, redis_url, STALE)
        await owner_is(redis_url, STALE)
        held = proxy.hold(relay=STALE)
        await publisher.publish_many(messages(channel, range(1, BATCH + 1)))
        claimed = await held.arrived(within=20)
        assert claimed.seqs == in_flight_seqs(redis_url) == list(range(1, BATCH + 1)), (
            "the batch must be claimed and not yet acknowledged when the relay stops"
        )

        stale.signal(signal.SIGSTOP)
        try:
            await start_relay(relays, proxy, redis_url, NEW)
            taken_over = await proxy.wait_for(
                lambda: (
                    len(proxy.log.by(NEW)) >= BATCH
                    and all(s.answer != PENDING for s in proxy.log.by(NEW))
                ),
                within=20,
            )
            assert taken_over, f"{NEW} did not redeliver the in-flight batch: {proxy.log.summary()}"
            held.answer(503)  # the stale relay's request failed: it wants to send again
            resumed = proxy.mark()
        finally:
            stale.signal(signal.SIGCONT)
        await poll(
            lambda: (
                logged(stale.log(), "lease lost or about to expire, not sending", shard=0)
                or proxy.log.by(STALE, since=resumed)
            ),
            within=15,
            what="the resumed relay neither gave the batch up nor sent it",
        )
        await publisher.publish_many(messages(channel, range(BATCH + 1, 2 * BATCH + 1)))
        await wait_until_drained(redis_url, 1, within=20)
        await subscriber.wait_for(2 * BATCH, within=20)
        received = await subscriber.settle(quiet=0.5)

    log = proxy.log
    assert log.by(STALE, since=resumed) == [], "the relay sent after it lost the lease"
    assert log.stale() == []
    # The one named repeat: the new owner redelivered the stopped relay's batch,
    # first, and nothing was sent twice by one owner.
    assert [(s.relay, s.seq) for s in log.redeliveries()] == [(NEW, v) for v in claimed.seqs]
    assert proxy.batches(relay=NEW)[0].seqs == claimed.seqs
    assert log.duplicates() == []
    assert [e["version"] for e in received] == list(range(1, 2 * BATCH + 1))
    assert delivered_count(redis_url) == 2 * BATCH


async def test_a_stale_ack_cannot_remove_the_batch_the_new_owner_claimed(
    redis_url: str,
    centrifugo: CentrifugoServer,
    recording_proxy: RecordingProxy,
    relays: list[RelayProcess],
    publisher: AsyncPublisher,
) -> None:
    proxy, channel = recording_proxy, "obj:fence-ack"
    async with Subscriber(centrifugo.ws_url, [channel]) as subscriber:
        stale = await start_relay(relays, proxy, redis_url, STALE)
        await owner_is(redis_url, STALE)
        held_stale = proxy.hold(relay=STALE)
        await publisher.publish_many(messages(channel, range(1, BATCH + 1)))
        batch = await held_stale.arrived(within=20)
        assert batch.seqs == in_flight_seqs(redis_url) == list(range(1, BATCH + 1))

        stale.signal(signal.SIGSTOP)
        try:
            held_new = proxy.hold(relay=NEW)
            await start_relay(relays, proxy, redis_url, NEW)
            claimed = await held_new.arrived(within=20)
            assert claimed.seqs == batch.seqs, "the new owner must claim the in-flight batch"
            # The stopped relay's request reaches Centrifugo late and is accepted:
            # when it resumes it reads success and acknowledges, with its old lease.
            held_stale.forward()
            assert await proxy.wait_for(
                lambda: all(s.answer != PENDING for s in batch.sends), within=10
            )
            async with RedisMonitor(redis_url) as monitor:
                stale.signal(signal.SIGCONT)
                await monitor.wait_for(
                    lambda command: ACK.sha in command and f"{STALE}#" in command, within=15
                )
            assert in_flight_seqs(redis_url) == claimed.seqs, (
                "the stale relay's ack removed the batch the new owner claimed"
            )
            assert delivered_count(redis_url) == 0, "the stale relay's ack was counted"
        finally:
            stale.signal(signal.SIGCONT)
            held_new.forward()
        await wait_until_drained(redis_url, 1, within=20)
        await subscriber.wait_for(2 * BATCH, within=20)
        received = await subscriber.settle(quiet=0.5)

    assert delivered_count(redis_url) == BATCH, "each message is acknowledged exactly once"
    log = proxy.log
    assert log.stale() == []
    assert all(s.forwarded_late for s in batch.sends)
    # Named repeats: the stale relay's late request and the new owner's
    # redelivery both reached Centrifugo (unique idempotency keys make both
    # visible); nothing else was sent twice.
    assert [(s.relay, s.seq) for s in log.redeliveries()] == [(NEW, v) for v in batch.seqs]
    assert log.duplicates() == []
    assert sorted(e["version"] for e in received) == sorted([*batch.seqs, *claimed.seqs])
