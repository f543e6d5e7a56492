"""The fences themselves, on a real Redis: the lease and claim/ack scripts and the keeper's margin.

Each rule that docs/scaling.md's fencing argument relies on is checked on its
own here, with a stale lease built by hand; ``test_fencing.py`` shows the same
rules holding when a real relay is paused and another takes over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import redis
import redis.exceptions

from centrifugo_async import Keyspace
from centrifugo_async.connection import async_client
from centrifugo_async.protocol.scripts import (
    ACK,
    ACK_CLAIM,
    ACK_GROWS,
    CLAIM,
    LEASE_ACQUIRE,
    LEASE_LOST,
    LEASE_RELEASE,
    LuaScript,
)
from centrifugo_async.relay import lease as lease_module
from centrifugo_async.relay.lease import LeaseKeeper

pytestmark = pytest.mark.integration

SHARD = Keyspace(shards=1).shard(0)
TTL_MS = 10_000


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def run(client: redis.Redis, script: LuaScript, keys: list[str], *args: object) -> object:
    return client.register_script(script.source)(keys=keys, args=list(args))


def claim(client: redis.Redis, lease: str, max_count: int = 100) -> list[object]:
    reply = run(client, CLAIM, [SHARD.queue, SHARD.inflight, SHARD.lease], lease, max_count, 10**6)
    assert isinstance(reply, list)
    return reply


def ack(client: redis.Redis, lease: str, count: int, *letters: bytes) -> object:
    keys = [SHARD.inflight, SHARD.lease, SHARD.state, SHARD.dlq, SHARD.versions, SHARD.versions_old]
    delivered = count - len(letters)
    return run(client, ACK, keys, lease, count, delivered, 0, "0", 0, 100, 0, *letters)


def ack_claim(
    client: redis.Redis, lease: str, count: int, *letters: bytes, max_count: int = 100
) -> object:
    keys = [SHARD.inflight, SHARD.lease, SHARD.state, SHARD.dlq, SHARD.versions, SHARD.versions_old]
    delivered = count - len(letters)
    args = [lease, count, delivered, 0, "1", 0, 100, 0, *letters]
    return run(client, ACK_CLAIM, [*keys, SHARD.queue], max_count, 10**6, *args)


def acquire(
    client: redis.Redis, owner: str, held: str = "", *, may_acquire: bool = True
) -> str | None:
    value = run(
        client,
        LEASE_ACQUIRE,
        [SHARD.lease, SHARD.state],
        owner,
        TTL_MS,
        held,
        int(time.time() * 1000),
        "1" if may_acquire else "0",
    )
    return value.decode() if isinstance(value, bytes) else None


def refused(fn: object, *args: object) -> bool:
    """True when the call raised the scripts' LEASE_LOST error."""
    assert callable(fn)
    try:
        fn(*args)
    except redis.exceptions.ResponseError as exc:
        return str(exc).startswith(LEASE_LOST)
    return False


def snapshot(client: redis.Redis) -> tuple[list[bytes], list[bytes], dict[bytes, bytes], int]:
    return (
        client.lrange(SHARD.queue, 0, -1),
        client.lrange(SHARD.inflight, 0, -1),
        client.hgetall(SHARD.state),
        client.llen(SHARD.dlq),
    )


def test_claim_and_ack_refuse_every_lease_but_the_current_one(client: redis.Redis) -> None:
    first = acquire(client, "relay-a")
    client.delete(SHARD.lease)  # relay-a's lease expired ...
    current = acquire(client, "relay-a")  # ... and relay-a won the shard again: new epoch
    assert (first, current) == ("relay-a#1", "relay-a#2")
    client.rpush(SHARD.queue, b"m1", b"m2", b"m3")
    assert claim(client, current, max_count=2) == [0, b"m1", b"m2"]

    before = snapshot(client)
    for stale in ("relay-b#2", "relay-a#1", "relay-a", ""):
        assert refused(claim, client, stale), f"claim accepted the lease {stale!r}"
        assert refused(ack, client, stale, 2, b"letter"), f"ack accepted the lease {stale!r}"
        assert refused(ack_claim, client, stale, 2), f"ack+claim accepted the lease {stale!r}"
        assert snapshot(client) == before, f"a refused call with {stale!r} changed the shard"

    client.delete(SHARD.lease)
    assert refused(claim, client, current), "claim worked without any lease"
    assert refused(ack, client, current, 2), "ack worked without any lease"
    assert refused(ack_claim, client, current, 2), "ack+claim worked without any lease"
    assert snapshot(client) == before


def test_ack_with_the_current_lease_removes_the_batch_and_counts_it(client: redis.Redis) -> None:
    lease = acquire(client, "relay-a")
    assert lease is not None
    client.rpush(SHARD.queue, b"m1", b"m2", b"m3")
    assert claim(client, lease, max_count=2) == [0, b"m1", b"m2"]
    assert ack(client, lease, 2, b"letter") == 1
    queue, in_flight, state, letters = snapshot(client)
    assert (queue, in_flight, letters) == ([b"m3"], [], 1)
    assert (state[b"delivered"], state[b"dead_lettered"]) == (b"1", b"1")


def test_claim_serves_the_in_flight_list_before_the_queue(client: redis.Redis) -> None:
    lease = acquire(client, "relay-b")
    assert lease is not None
    client.rpush(SHARD.inflight, b"left-1", b"left-2")  # claimed by a relay that died
    client.rpush(SHARD.queue, b"m1", b"m2")
    assert claim(client, lease) == [1, b"left-1", b"left-2"]
    assert claim(client, lease) == [1, b"left-1", b"left-2"], "redelivery until acknowledged"
    assert ack(client, lease, 2) == 1
    assert claim(client, lease) == [0, b"m1", b"m2"]
    assert client.llen(SHARD.queue) == 0


def test_a_lease_is_taken_only_when_free_and_renewed_only_by_its_holder(
    client: redis.Redis,
) -> None:
    held = acquire(client, "relay-a")
    assert held == "relay-a#1"
    assert acquire(client, "relay-b") is None, "a held lease was taken"
    assert acquire(client, "relay-b", "relay-b#1") is None, "another relay's lease was renewed"
    assert acquire(client, "relay-a", "relay-a#0") is None, "an old epoch was renewed"
    assert client.get(SHARD.lease) == b"relay-a#1"

    client.pexpire(SHARD.lease, 500)
    assert acquire(client, "relay-a", held, may_acquire=False) == held
    assert client.pttl(SHARD.lease) > 5_000, "the renewal did not extend the lease"

    client.delete(SHARD.lease)
    assert acquire(client, "relay-a", held, may_acquire=False) is None, "renewed a lost lease"
    assert acquire(client, "relay-b") == "relay-b#2"
    assert acquire(client, "relay-a") is None
    assert client.hget(SHARD.state, "lease_epoch") == b"2"


def test_a_relay_releases_only_its_own_lease(client: redis.Redis) -> None:
    acquire(client, "relay-b")
    keys = [SHARD.lease]
    assert run(client, LEASE_RELEASE, keys, "relay-a#1") == 0
    assert run(client, LEASE_RELEASE, keys, "relay-b#0") == 0
    assert client.get(SHARD.lease) == b"relay-b#1"
    assert run(client, LEASE_RELEASE, keys, "relay-b#1") == 1
    assert client.get(SHARD.lease) is None


async def test_the_keeper_offers_a_lease_only_while_a_third_of_its_ttl_is_left(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local check before each send: a relay that was paused wakes up past it."""
    skew = 0.0
    clock = SimpleNamespace(monotonic=lambda: time.monotonic() + skew)
    monkeypatch.setattr(lease_module, "time", clock)
    ttl = 3.0
    connection = async_client(redis_url)
    try:
        keeper = LeaseKeeper(connection, Keyspace(shards=1), "relay-a", ttl)
        await keeper.tick()
        value = keeper.value(0)
        assert value == "relay-a#1"
        skew = ttl * 0.6  # more than a third of the TTL left
        assert keeper.value(0) == value
        skew = ttl * 0.7  # less than a third left: no longer offered to the workers
        assert keeper.value(0) is None
        assert not keeper.holds(0)
        await keeper.tick()  # renewed: offered again
        assert keeper.value(0) == value
    finally:
        await connection.aclose()


def test_ack_claim_acks_then_claims_like_the_two_scripts_in_a_row(client: redis.Redis) -> None:
    lease = acquire(client, "relay-a")
    assert lease is not None
    client.rpush(SHARD.queue, b"m1", b"m2", b"m3", b"m4", b"m5")
    assert claim(client, lease, max_count=2) == [0, b"m1", b"m2"]
    assert ack_claim(client, lease, 2, b"dl", max_count=2) == [0, b"m3", b"m4"]
    queue, in_flight, state, letters = snapshot(client)
    assert (queue, in_flight, letters) == ([b"m5"], [b"m3", b"m4"], 1)
    assert (state[b"delivered"], state[b"dead_lettered"]) == (b"1", b"1")
    assert ack_claim(client, lease, 1, max_count=2) == [1, b"m4"], (
        "the rest of the in-flight list first"
    )
    assert ack_claim(client, lease, 1, max_count=2) == [0, b"m5"]
    assert ack_claim(client, lease, 1, max_count=2) == [0]
    assert snapshot(client)[:2] == ([], [])


def test_an_ack_claim_whose_dead_letters_grow_memory_changes_nothing(client: redis.Redis) -> None:
    lease = acquire(client, "relay-a")
    assert lease is not None
    client.rpush(SHARD.queue, b"m1", b"m2")
    assert claim(client, lease, max_count=1) == [0, b"m1"]
    before = snapshot(client)
    with pytest.raises(redis.exceptions.ResponseError, match=ACK_GROWS):
        ack_claim(client, lease, 1, b"a dead letter much larger than the entry it stands for")
    assert snapshot(client) == before
