"""SIGTERM ends the relay within the documented grace period, even when a peer hangs;
a stop or a hand-over leaves no batch in flight.

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

import attrs
import pytest
import redis

from centrifugo_async import AsyncPublisher, Message, Publisher
from centrifugo_async.protocol.keys import Keyspace
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.lease import LeaseKeeper
from centrifugo_async.relay.worker import ShardWorker
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess
from tests.support.fake_centrifugo import FakeCentrifugo, Hang
from tests.support.stack import history, shard_stats, wait_until, wait_until_drained

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


async def test_a_stop_during_the_ack_that_claims_the_next_batch_delivers_that_batch(
    relay_settings: RelaySettings,
    centrifugo: CentrifugoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop arrives while ``ACK_CLAIM`` runs: the batch it claimed is in flight.

    The worker must deliver it before it exits, as it finishes any batch in
    flight; a stop leaves no half-done batch for the next owner to redeliver.
    """
    stop = asyncio.Event()
    claimed_with_ack = 0

    def stop_once_it_claims(worker: ShardWorker, lease: str) -> bool:
        nonlocal claimed_with_ack
        allowed = may_claim_with_ack(worker, lease)
        if allowed:
            claimed_with_ack += 1
            stop.set()
        return allowed

    may_claim_with_ack = ShardWorker._may_claim_with_ack
    monkeypatch.setattr(ShardWorker, "_may_claim_with_ack", stop_once_it_claims)
    settings = attrs.evolve(relay_settings, shards=1, max_batch=10)
    channel = "obj:stop-during-ack-claim"
    with Publisher.from_url(settings.redis_url, shards=1) as publisher:
        publisher.publish_many([Message(channel, {"n": n}, f"key-{n}", 1) for n in range(50)])

    await asyncio.wait_for(serve(settings, stop=stop), 20)

    [stats] = shard_stats(settings.redis_url, 1)
    assert claimed_with_ack == 1
    assert stats.in_flight == 0, "the batch claimed with the ack was left in flight"
    assert [p["data"]["n"] for p in history(centrifugo, channel)] == list(range(20))
    assert stats.queued == 30


async def test_a_hand_over_decided_during_the_ack_that_claims_delivers_that_batch_first(
    relay_settings: RelaySettings,
    centrifugo: CentrifugoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay decides to hand the shard over while ``ACK_CLAIM`` runs.

    The batch that script claimed must be delivered before the lease goes: left in
    flight, the next owner would redeliver it latest-wins and skip versions.
    """
    stop = asyncio.Event()
    releasing: set[int] = set()
    in_flight_at_release: list[int] = []
    client = redis.Redis.from_url(relay_settings.redis_url)

    def hand_over_once_it_claims(worker: ShardWorker, lease: str) -> bool:
        allowed = may_claim_with_ack(worker, lease)
        if allowed and not in_flight_at_release:
            releasing.add(worker.shard)
        return allowed

    async def release(keeper: LeaseKeeper, shard: int) -> None:
        in_flight_at_release.append(client.llen(Keyspace(shards=1).shard(shard).inflight))
        releasing.discard(shard)
        await release_lease(keeper, shard)
        stop.set()

    may_claim_with_ack = ShardWorker._may_claim_with_ack
    release_lease = LeaseKeeper.release
    monkeypatch.setattr(ShardWorker, "_may_claim_with_ack", hand_over_once_it_claims)
    monkeypatch.setattr(LeaseKeeper, "should_release", lambda _, shard: shard in releasing)
    monkeypatch.setattr(LeaseKeeper, "release", release)
    settings = attrs.evolve(relay_settings, shards=1, max_batch=10)
    channel = "obj:hand-over-during-ack-claim"
    with Publisher.from_url(settings.redis_url, shards=1) as publisher:
        publisher.publish_many([Message(channel, {"n": n}, f"key-{n}", 1) for n in range(50)])

    await asyncio.wait_for(serve(settings, stop=stop), 20)

    assert in_flight_at_release == [0], "the batch claimed with the ack was left in flight"
    assert [p["data"]["n"] for p in history(centrifugo, channel)] == list(range(20))
