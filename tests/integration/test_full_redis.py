"""A Redis at ``maxmemory`` (policy ``noeviction``): publishing is refused, the relay drains.

Redis runs with a few MiB of memory and is filled by the publisher until it
refuses a publish. The relay must keep its leases, claim, deliver and
acknowledge (its work only shrinks memory), keep a dead letter it cannot write
yet in flight instead of dropping it, and empty every queue once Centrifugo
(the scripted fake, refusing with 503 while Redis is full) answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from centrifugo_async import Keyspace, Publisher, QueueUnavailable, shard_for
from centrifugo_async._clock import now_ms
from centrifugo_async.admin import iter_dead_letters
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.lease import LeaseKeeper
from devstack import RedisServer
from tests.support.checks import order_inversions
from tests.support.fake_centrifugo import Accept, FakeCentrifugo, Status
from tests.support.stack import shard_stats, wait_until, wait_until_drained

SHARDS = 4
MAXMEMORY = 4 * 1024 * 1024
BAD_SHARD = 0
MAX_PUBLISHES = 100_000
LEASE_TTL = 1.5
RELAY_ID = "relay-on-a-full-redis"


@pytest.fixture
def full_redis() -> Iterator[RedisServer]:
    with RedisServer(maxmemory=MAXMEMORY) as server:
        yield server


def fill(publisher: Publisher, keys: list[str], versions: dict[str, int]) -> int:
    """Publish until Redis refuses for lack of memory; returns how many went in."""
    for count in range(MAX_PUBLISHES):
        key = keys[count % len(keys)]
        try:
            publisher.publish("obj:full", {"pad": "x" * 200}, key=key, version=versions[key] + 1)
        except QueueUnavailable as exc:
            assert "maxmemory" in str(exc)
            return count
        versions[key] += 1
    pytest.fail(f"Redis took {MAX_PUBLISHES} publishes without reaching maxmemory")


def waiting_for_memory(caplog: pytest.LogCaptureFixture) -> bool:
    return any("dead letters wait for memory" in r.getMessage() for r in caplog.records)


async def test_a_full_redis_drains_by_itself_and_keeps_its_dead_letter(
    full_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="centrifugo_async.relay")
    keyspace = Keyspace(shards=SHARDS)
    client = redis.Redis.from_url(full_redis.url)
    publisher = Publisher(client, shards=SHARDS)
    publisher.ensure_topology()
    # The bad shard holds one entry that is not an envelope: a batch of its own,
    # whose dead letter weighs more than the entry it replaces.
    client.rpush(keyspace.shard(BAD_SHARD).queue, b"not an envelope")
    # The relay is a member of its group already, as if it had been running
    # when Redis filled up (a relay that is not a member cannot join then).
    member_until_ms = now_ms() + 60_000
    client.zadd(keyspace.relays, {RELAY_ID: member_until_ms})
    keys = [k for k in (f"item-{n}" for n in range(200)) if shard_for(k, SHARDS) != BAD_SHARD]
    versions = dict.fromkeys(keys, 0)
    published = fill(publisher, keys, versions)

    async with FakeCentrifugo() as fake:
        fake.default = Status(503)
        settings = RelaySettings(
            metrics_port=0,
            redis_url=full_redis.url,
            api_url=fake.url,
            api_key=fake.api_key or "",
            relay_id=RELAY_ID,
            lease_ttl=LEASE_TTL,
            idle_wait=0.2,
            retry_initial=0.05,
            retry_max=0.3,
            max_batch=100,
        )
        stop = asyncio.Event()
        relay = asyncio.create_task(serve(settings, stop=stop))
        try:
            # Every shard has claimed its first batch at maxmemory; the dead
            # letter cannot be written. Fill up again behind the claims.
            await wait_until(
                lambda: (
                    all(s.in_flight > 0 for s in shard_stats(full_redis.url, SHARDS))
                    and waiting_for_memory(caplog)
                ),
                within=20,
            )
            published += fill(publisher, keys, versions)
            leases = [client.get(k.lease) for k in keyspace.all_shards()]
            assert all(lease and lease.startswith(b"relay-on-a-full-redis#") for lease in leases)
            full_since_ms = now_ms()

            # Once its heartbeat, renewed at maxmemory, reaches two lease TTLs
            # past this point, the relay still holds the same leases: renewed,
            # not expired and retaken.
            renewed_until = full_since_ms + 2 * LEASE_TTL * 1000
            await wait_until(
                lambda: (
                    renewed_until
                    <= (client.zscore(keyspace.relays, RELAY_ID) or 0)
                    < member_until_ms
                ),
                within=20,
            )
            assert [client.get(k.lease) for k in keyspace.all_shards()] == leases
            with pytest.raises(QueueUnavailable, match="maxmemory"):
                publisher.publish("obj:full", {}, key=keys[0], version=versions[keys[0]] + 1)
            bad = shard_stats(full_redis.url, SHARDS)[BAD_SHARD]
            assert (bad.in_flight, bad.dead_letters) == (1, 0), "written at maxmemory, or dropped"

            fake.default = Accept()
            await wait_until_drained(full_redis.url, SHARDS, within=60)
            publisher.publish("obj:full", {"after": True}, key=keys[0], version=10**6)
            await wait_until_drained(full_redis.url, SHARDS, within=20)
        finally:
            stop.set()
            await asyncio.wait_for(relay, 20)

    delivered = [p["data"] for p in fake.accepted]
    pairs = {(e["key"], e["version"]) for e in delivered}
    stats = shard_stats(full_redis.url, SHARDS)
    # Monotonic delivery (the default), its version memory written at maxmemory too:
    # a batch Centrifugo answered 503 goes out again latest-wins, so the versions it
    # held below a key's newest are superseded instead; nothing else is missing.
    assert len(pairs) + sum(s.superseded for s in stats) == published + 1
    newest = {key: version for key, version in versions.items() if version}
    assert set({**newest, keys[0]: 10**6}.items()) <= pairs, "every key's newest arrived"
    assert order_inversions(delivered) == 0
    assert sum(s.delivered for s in stats) == len(pairs) == len(delivered)
    letters = [e.letter for e in iter_dead_letters(client, keyspace)]
    assert [(letter.reason, letter.original) for letter in letters if letter] == [
        ("invalid_envelope", b"not an envelope")
    ]
    memory = client.info("memory")
    assert memory["used_memory"] < MAXMEMORY
    client.close()


async def test_a_relay_started_at_maxmemory_takes_its_shards_and_joins_later(
    full_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="centrifugo_async.relay")
    keyspace = Keyspace(shards=SHARDS)
    client = redis.Redis.from_url(full_redis.url)
    publisher = Publisher(client, shards=SHARDS)
    keys = [f"item-{n}" for n in range(100)]
    published = fill(publisher, keys, dict.fromkeys(keys, 0))
    async with FakeCentrifugo() as fake:
        settings = RelaySettings(
            metrics_port=0,
            redis_url=full_redis.url,
            api_url=fake.url,
            api_key=fake.api_key or "",
            relay_id=RELAY_ID,
            lease_ttl=LEASE_TTL,
            idle_wait=0.2,
            shards=SHARDS,
        )
        stop = asyncio.Event()
        relay = asyncio.create_task(serve(settings, stop=stop))
        try:
            await wait_until_drained(full_redis.url, SHARDS, within=60)
            await wait_until(lambda: client.zscore(keyspace.relays, RELAY_ID) is not None, 10)
        finally:
            stop.set()
            await asyncio.wait_for(relay, 20)
    assert len(fake.accepted) == published
    assert any("cannot join the relay group" in r.getMessage() for r in caplog.records)
    client.close()


async def test_a_worker_waits_for_the_next_renewal_instead_of_spinning(redis_url: str) -> None:
    """A held lease too close to its expiry to use (renewals failing) must not wake
    the worker again and again: it waits for the next successful renewal."""
    client = redis.asyncio.Redis.from_url(redis_url)
    keeper = LeaseKeeper(client, Keyspace(shards=1), "spin-test", ttl=1.0)
    try:
        await keeper.tick()
        assert keeper.holds(0)
        # No renewal: the usable part of the TTL runs out.
        await wait_until(lambda: not keeper.holds(0), within=5)
        waiting = asyncio.create_task(keeper.wait_acquired(0, 30))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done(), "wait_acquired returned at once: the worker would spin"
        await keeper.tick()
        await asyncio.wait_for(waiting, 5)
        assert keeper.holds(0)
    finally:
        await client.aclose()
