"""Publisher twins against a real Redis."""

from __future__ import annotations

from collections import defaultdict

import pytest
import redis
import redis.connection

from centrifugo_async import (
    AsyncPublisher,
    InvalidMessage,
    Keyspace,
    Message,
    Publisher,
    QueueUnavailable,
    TopologyMismatch,
    decode_envelope,
    shard_for,
)
from devstack import free_port


def queued(client: redis.Redis, keyspace: Keyspace) -> dict[int, list[bytes]]:
    return {k.shard: client.lrange(k.queue, 0, -1) for k in keyspace.all_shards()}  # type: ignore[misc]


def test_publish_enqueues_exactly_the_returned_envelope(redis_url: str) -> None:
    with Publisher.from_url(redis_url, shards=8) as publisher:
        envelope = publisher.publish(
            "obj:1",
            {"status": "paid"},
            key="order:42",
            version=7,
            tags={"kind": "update"},
            ttl_ms=5000,
        )
    client = redis.Redis.from_url(redis_url)
    (raw,) = queued(client, publisher.keyspace)[envelope.shard]
    assert decode_envelope(raw) == envelope
    assert envelope.shard == shard_for("order:42", 8)
    assert (envelope.seq, envelope.version, envelope.data) == (1, 7, {"status": "paid"})


def test_publish_is_one_round_trip(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Count the writes our client makes to its socket while publishing."""
    client = redis.Redis.from_url(redis_url)
    with Publisher(client, shards=4) as publisher:
        publisher.publish("obj:1", {}, key="k", version=1)  # topology checked once
        sends: list[object] = []
        original = redis.connection.Connection.send_packed_command

        def counting(
            self: redis.connection.Connection, command: object, check_health: bool = True
        ) -> None:
            sends.append(command)
            original(self, command, check_health)

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
        publisher.publish("obj:1", {}, key="k", version=2)
        assert len(sends) == 1
        sends.clear()
        publisher.publish_many([Message("obj:1", {}, f"k{i}", 3) for i in range(500)])
        assert len(sends) == 1


def test_seq_is_gapless_per_shard_and_order_per_key_is_call_order(redis_url: str) -> None:
    messages = [Message("obj:1", {"i": i}, f"key-{i % 37}", i) for i in range(3000)]
    with Publisher.from_url(redis_url, shards=8) as publisher:
        publisher.publish_many(messages[:1000])
        for message in messages[1000:1100]:
            publisher.publish(
                message.channel, message.data, key=message.key, version=message.version
            )
        publisher.publish_many(messages[1100:])
    client = redis.Redis.from_url(redis_url)
    versions_by_key: dict[str, list[int]] = defaultdict(list)
    for shard, entries in queued(client, publisher.keyspace).items():
        envelopes = [decode_envelope(raw) for raw in entries]
        assert [e.seq for e in envelopes] == list(range(1, len(envelopes) + 1))
        assert {e.shard for e in envelopes} <= {shard}
        for e in envelopes:
            versions_by_key[e.key].append(e.version)
    assert sum(map(len, versions_by_key.values())) == 3000
    assert all(v == sorted(v) for v in versions_by_key.values())


def test_a_batch_with_one_bad_message_writes_nothing(redis_url: str) -> None:
    bad_batch = [Message("obj:1", {}, "k", 1), Message("obj:1", {}, "k", 2)]
    with Publisher.from_url(redis_url, shards=4, max_payload_bytes=300) as publisher:
        with pytest.raises(InvalidMessage):
            publisher.publish_many([*bad_batch, Message("obj:1", "x" * 400, "k", 3)])
        with pytest.raises(InvalidMessage):
            publisher.publish("obj:1", {1, object()}, key="k", version=1)
    client = redis.Redis.from_url(redis_url)
    assert all(not entries for entries in queued(client, publisher.keyspace).values())


def test_a_different_shard_count_fails_fast(redis_url: str) -> None:
    with Publisher.from_url(redis_url, shards=8) as publisher:
        publisher.publish("obj:1", {}, key="k", version=1)
    with pytest.raises(TopologyMismatch, match=r"shards=8.*shards=16"):
        Publisher.from_url(redis_url, shards=16).publish("obj:1", {}, key="k", version=1)
    client = redis.Redis.from_url(redis_url)
    assert sum(map(len, queued(client, Keyspace(shards=16)).values())) == 1


def test_shard_state_guards_against_misrouting_even_without_meta(redis_url: str) -> None:
    """A shard stamped with another count refuses the write (e.g. meta deleted by hand)."""
    client = redis.Redis.from_url(redis_url)
    first = next(f"k{i}" for i in range(100) if shard_for(f"k{i}", 4) == 1)
    with Publisher(client, shards=4) as publisher:
        publisher.publish("obj:1", {}, key=first, version=1)
    client.delete(Keyspace(shards=4).meta)
    other = Publisher(client, shards=2)
    key = next(f"k{i}" for i in range(100) if shard_for(f"k{i}", 2) == 1)
    with pytest.raises(TopologyMismatch, match="shards=4"):
        other.publish("obj:1", {}, key=key, version=1)


def test_unreachable_redis_raises_a_typed_error() -> None:
    publisher = Publisher.from_url(f"redis://127.0.0.1:{free_port()}/0", shards=4)
    with pytest.raises(QueueUnavailable, match=r"Connection refused|connecting"):
        publisher.publish("obj:1", {}, key="k", version=1)


def test_script_cache_flush_is_survived(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with Publisher(client, shards=2) as publisher:
        publisher.publish("obj:1", {}, key="k", version=1)
        client.script_flush()
        assert publisher.publish("obj:1", {}, key="k", version=2).seq == 2


async def test_async_twin_behaves_the_same(redis_url: str) -> None:
    async with AsyncPublisher.from_url(redis_url, shards=8) as publisher:
        first = await publisher.publish("obj:1", {"n": 1}, key="a", version=1)
        batch = await publisher.publish_many(
            [Message("obj:1", {"n": i}, "a", i) for i in range(2, 50)]
        )
        with pytest.raises(InvalidMessage, match="`version`"):
            await publisher.publish("obj:1", {}, key="a", version=-5)
    assert [e.seq for e in [first, *batch]] == list(range(1, 50))
    client = redis.Redis.from_url(redis_url)
    entries = queued(client, publisher.keyspace)[first.shard]
    assert [decode_envelope(raw).version for raw in entries] == list(range(1, 50))
    with pytest.raises(TopologyMismatch):
        await AsyncPublisher.from_url(redis_url, shards=3).publish("c", 1, key="k", version=1)
