"""The freshness scripts on a real Redis: the version memory and dropping a superseded head.

The ACK script records each delivered (channel, key)'s version in the shard's
``versions`` hash, atomically with the ack; once that hash holds ``memory``
fields it becomes the old generation (replacing the one before) and a new one
starts. ``KNOWN_VERSIONS`` reads both. So a pair is forgotten only after at
least ``memory`` other pairs of its shard were delivered after it, and a shard
holds about twice ``memory`` pairs at most (docs/relay.md, freshness).

``DROP_SUPERSEDED`` removes queued entries the relay read and found superseded
(latest-wins) without delivering them: fenced by the lease, and only while the
head of the queue is still the entry the relay read first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import redis

from centrifugo_async import Keyspace
from centrifugo_async.protocol.scripts import (
    ACK,
    ACK_GROWS,
    DROP_SUPERSEDED,
    KNOWN_VERSIONS,
    LEASE_LOST,
    LuaScript,
)

pytestmark = pytest.mark.integration

SHARD = Keyspace(shards=1).shard(0)
LEASE = "relay-a#1"
MEMORY = 100


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    connection.set(SHARD.lease, LEASE)
    yield connection
    connection.close()


def run(client: redis.Redis, script: LuaScript, keys: list[str], *args: object) -> object:
    return client.register_script(script.source)(keys=keys, args=list(args))


def ack(
    client: redis.Redis,
    versions: dict[str, int],
    *,
    entries: list[bytes] | None = None,
    superseded: int = 0,
    guard: bool = False,
) -> object:
    """Claim ``entries`` (one per version by default) and acknowledge them as delivered."""
    batch = entries if entries is not None else [b"x" * 200 for _ in versions]
    if batch:
        client.rpush(SHARD.inflight, *batch)
    keys = [SHARD.inflight, SHARD.lease, SHARD.state, SHARD.dlq, SHARD.versions]
    keys.append(SHARD.versions_old)
    pairs = [part for field, version in versions.items() for part in (field, version)]
    count = len(batch)
    return run(
        client,
        ACK,
        keys,
        LEASE,
        count,
        count - superseded,
        0,
        "1" if guard else "0",
        superseded,
        MEMORY,
        len(versions),
        *pairs,
    )


def known(client: redis.Redis, *fields: str) -> list[int | None]:
    reply = run(client, KNOWN_VERSIONS, [SHARD.versions, SHARD.versions_old], *fields)
    assert isinstance(reply, list)
    return [None if v is None else int(v) for v in reply]


def others(start: int, count: int) -> dict[str, int]:
    return {f"other-{n}": 1 for n in range(start, start + count)}


def test_the_ack_records_the_delivered_versions_and_the_superseded_count(
    client: redis.Redis,
) -> None:
    assert ack(client, {"a": 3, "b": 9}, entries=[b"1" * 200] * 3, superseded=1) == 1
    assert client.llen(SHARD.inflight) == 0
    assert client.hgetall(SHARD.versions) == {b"a": b"3", b"b": b"9"}
    state = client.hgetall(SHARD.state)
    assert (state[b"delivered"], state[b"superseded"]) == (b"2", b"1")
    assert known(client, "a", "b", "c") == [3, 9, None]
    ack(client, {"a": 2**53 - 1})
    assert known(client, "a") == [2**53 - 1], "versions up to 2**53-1 stay exact"


def test_a_pair_is_forgotten_only_after_memory_other_pairs_were_delivered(
    client: redis.Redis,
) -> None:
    ack(client, others(0, MEMORY - 1))
    ack(client, {"x": 7})  # the generation is full: it becomes the old one
    assert (client.hlen(SHARD.versions), client.hlen(SHARD.versions_old)) == (0, MEMORY)
    ack(client, others(MEMORY, MEMORY - 1))
    assert known(client, "x") == [7], f"{MEMORY - 1} pairs since: still remembered"
    ack(client, others(2 * MEMORY, 1))
    assert known(client, "x") == [None], f"{MEMORY} pairs since: forgotten"
    assert client.hlen(SHARD.versions) + client.hlen(SHARD.versions_old) <= 2 * MEMORY


def test_the_newer_generation_wins_and_a_pair_delivered_again_is_kept(
    client: redis.Redis,
) -> None:
    ack(client, {"x": 1, **others(0, MEMORY - 1)})  # rotates: x at 1 is in the old one
    ack(client, {"x": 5})  # delivered again: in the new one too
    assert known(client, "x") == [5]
    ack(client, others(MEMORY, MEMORY - 1))  # rotates: x at 5 is old, x at 1 gone
    ack(client, others(2 * MEMORY, MEMORY - 1))
    assert known(client, "x") == [5], "kept a generation longer than its first delivery"
    ack(client, others(3 * MEMORY, 1))
    assert known(client, "x") == [None]
    ack(client, {"y": 4})
    client.hset(SHARD.versions_old, "y", 2)  # whichever generation holds the higher one
    assert known(client, "y") == [4]
    client.hset(SHARD.versions_old, "y", 6)
    assert known(client, "y") == [6]


def test_the_memory_guard_counts_the_versions_it_writes(client: redis.Redis) -> None:
    """At maxmemory ACK may not grow memory: versions heavier than what it removes make
    it reply ACK_GROWS and change nothing (the relay then runs ACK_GROWING)."""
    long_field = "k" * 500
    with pytest.raises(redis.exceptions.ResponseError, match=ACK_GROWS):
        ack(client, {long_field: 1}, entries=[b"small"], guard=True)
    assert client.llen(SHARD.inflight) == 1
    assert not client.exists(SHARD.versions)
    client.delete(SHARD.inflight)
    assert ack(client, {long_field: 1}, entries=[b"e" * 600], guard=True) == 1
    assert known(client, long_field) == [1]


def test_a_large_batch_of_versions_is_written_whole(client: redis.Redis) -> None:
    versions = {f"key-{n}": n for n in range(3000)}
    ack(client, versions, entries=[b"e" * 300] * 3000)
    assert client.hlen(SHARD.versions_old) == 3000, "past the memory: rotated at once"
    assert known(client, *versions) == list(versions.values())


def drop(client: redis.Redis, count: int, head: bytes, lease: str = LEASE) -> object:
    keys = [SHARD.queue, SHARD.lease, SHARD.state]
    return run(client, DROP_SUPERSEDED, keys, lease, count, hashlib.sha1(head).hexdigest())


def test_dropping_a_superseded_head_removes_exactly_those_entries_and_counts_them(
    client: redis.Redis,
) -> None:
    client.rpush(SHARD.queue, b"k@1", b"k@2", b"j@1", b"k@3")
    assert drop(client, 2, b"k@1") == 2
    assert client.lrange(SHARD.queue, 0, -1) == [b"j@1", b"k@3"]
    assert client.hget(SHARD.state, "superseded") == b"2"


def test_nothing_is_dropped_unless_the_head_is_the_entry_read_first(client: redis.Redis) -> None:
    client.rpush(SHARD.queue, b"k@1", b"k@2", b"k@3")
    assert drop(client, 2, b"k@2") == 0, "the head moved since it was read"
    assert drop(client, 5, b"k@1") == 0, "fewer entries than were read"
    with pytest.raises(redis.exceptions.ResponseError, match=LEASE_LOST):
        drop(client, 1, b"k@1", lease="relay-b#2")
    assert client.lrange(SHARD.queue, 0, -1) == [b"k@1", b"k@2", b"k@3"]
    assert not client.hexists(SHARD.state, "superseded")
    client.delete(SHARD.queue)
    assert drop(client, 1, b"k@1") == 0
