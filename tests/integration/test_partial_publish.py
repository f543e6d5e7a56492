"""``publish_many`` when Redis runs part of the pipeline and refuses the rest, for real.

Two ways a real Redis refuses some of a batch's per-shard script calls and runs
the others: a shard whose queue key holds the wrong type (an operator's
mistake), and ``maxmemory`` with ``noeviction`` reached half-way through the
pipeline. Either way the caller learns exactly which messages went in, and
retrying ``not_enqueued`` alone leaves every message in Redis exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from centrifugo_async import (
    AsyncPublisher,
    Keyspace,
    Message,
    PartialPublish,
    Publisher,
    QueueUnavailable,
    decode_envelope,
    shard_for,
)
from devstack import RedisServer

pytestmark = pytest.mark.integration

SHARDS = 16


def batch(count: int, payload: str = "") -> list[Message]:
    return [Message("obj:many", {"i": i, "pad": payload}, f"key-{i}", 1) for i in range(count)]


def stored(client: redis.Redis) -> list[tuple[str, int]]:
    """(key, version) of every entry in every queue."""
    found = []
    for keys in Keyspace(shards=SHARDS).all_shards():
        if client.type(keys.queue) != b"list":
            continue
        for raw in client.lrange(keys.queue, 0, -1):  # type: ignore[union-attr]
            envelope = decode_envelope(raw)
            found.append((envelope.key, envelope.version))
    return sorted(found)


def pairs(items: list[Message]) -> list[tuple[str, int]]:
    return sorted((m.key, m.version) for m in items)


def test_a_shard_that_refuses_its_call_is_reported_with_its_messages(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    messages = batch(48)
    broken = shard_for("key-3", SHARDS)
    with Publisher(client, shards=SHARDS) as publisher:
        client.set(Keyspace(shards=SHARDS).shard(broken).queue, "not a list")
        with pytest.raises(PartialPublish, match="WRONGTYPE") as caught:
            publisher.publish_many(messages)
        partial = caught.value
        refused = [m for m in messages if shard_for(m.key, SHARDS) == broken]
        assert partial.not_enqueued == refused, "refused messages, in the order given"
        assert partial.unknown == []
        assert stored(client) == sorted((e.key, e.version) for e in partial.enqueued)
        assert len(partial.enqueued) + len(refused) == 48
        assert isinstance(partial.__cause__, QueueUnavailable)

        client.delete(Keyspace(shards=SHARDS).shard(broken).queue)
        publisher.publish_many(partial.not_enqueued)
    assert stored(client) == pairs(messages), "every message exactly once after the retry"


@pytest.fixture
def small_redis() -> Iterator[redis.Redis]:
    """A Redis of its own, so its memory limit cannot touch other tests."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "noeviction")
        yield client
        client.close()


def test_memory_full_half_way_through_the_pipeline(small_redis: redis.Redis) -> None:
    """The issue's case: some calls enqueued, then OOM for the rest of the batch."""
    messages = batch(48, payload="x" * 100_000)
    with Publisher(small_redis, shards=SHARDS) as publisher:
        used = int(small_redis.info("memory")["used_memory"])
        small_redis.config_set("maxmemory", used + 1_000_000)
        with pytest.raises(PartialPublish, match="maxmemory") as caught:
            publisher.publish_many(messages)
        partial = caught.value
        assert 0 < len(partial.enqueued) < 48
        assert pairs(partial.not_enqueued) == sorted(
            set(pairs(messages)) - {(e.key, e.version) for e in partial.enqueued}
        )
        assert stored(small_redis) == sorted((e.key, e.version) for e in partial.enqueued)

        small_redis.config_set("maxmemory", 0)
        publisher.publish_many(partial.not_enqueued)
    assert stored(small_redis) == pairs(messages)


async def test_the_async_twin_reports_the_same(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    messages = batch(20)
    broken = shard_for("key-0", SHARDS)
    async with AsyncPublisher.from_url(redis_url, shards=SHARDS) as publisher:
        client.set(Keyspace(shards=SHARDS).shard(broken).queue, "not a list")
        with pytest.raises(PartialPublish) as caught:
            await publisher.publish_many(messages)
    refused = [m for m in messages if shard_for(m.key, SHARDS) == broken]
    assert caught.value.not_enqueued == refused
    assert stored(client) == sorted((e.key, e.version) for e in caught.value.enqueued)


def test_nothing_enqueued_is_not_a_partial_publish(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with Publisher(client, shards=SHARDS) as publisher:
        client.set(Keyspace(shards=SHARDS).shard(shard_for("key-0", SHARDS)).queue, "x")
        with pytest.raises(QueueUnavailable, match="WRONGTYPE") as caught:
            publisher.publish_many(batch(1))
    assert not isinstance(caught.value, PartialPublish)


@pytest.mark.parametrize("which", ["queue", "bell", "state"])
def test_an_enqueue_refused_for_a_wrong_key_type_writes_nothing(redis_url: str, which: str) -> None:
    """The sequence counter only moves when the messages go in: no gap after a refusal."""
    client = redis.Redis.from_url(redis_url)
    keys = Keyspace(shards=1).shard(0)
    with Publisher(client, shards=1) as publisher:
        publisher.publish_many([Message("obj:gap", {}, "a", 1)])
        seq_before = client.hget(keys.state, "seq")
        broken = getattr(keys, which)
        saved = client.dump(broken)
        client.delete(broken)
        client.set(broken, "an operator's mistake")
        with pytest.raises(QueueUnavailable, match=f"WRONGTYPE key {broken} holds a string"):
            publisher.publish_many([Message("obj:gap", {}, "a", 2)])
        assert client.get(broken) == b"an operator's mistake", "the key is left as it was"
        if which != "state":
            assert client.hget(keys.state, "seq") == seq_before, "no sequence number spent"

        client.delete(broken)
        if saved is not None:
            client.restore(broken, 0, saved)
        publisher.publish_many([Message("obj:gap", {}, "a", 3)])
    seqs = [decode_envelope(raw).seq for raw in client.lrange(keys.queue, 0, -1)]  # type: ignore[union-attr]
    assert seqs == [seqs[0], seqs[0] + 1], "consecutive sequence numbers, no gap"
