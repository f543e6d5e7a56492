"""Deletes on the publisher side: the envelope in Redis, batches, and a dead-letter replay."""

from __future__ import annotations

import pytest
import redis

from centrifugo_async import (
    AsyncPublisher,
    InvalidMessage,
    Keyspace,
    Message,
    Publisher,
    decode_envelope,
    encode_envelope,
)
from centrifugo_async.admin import replay_dead_letters
from centrifugo_async.protocol.deadletter import DeadLetter, encode_dead_letter

pytestmark = pytest.mark.integration


def queued(client: redis.Redis, keyspace: Keyspace) -> list[bytes]:
    return [e for k in keyspace.all_shards() for e in client.lrange(k.queue, 0, -1)]  # type: ignore[union-attr]


def test_delete_enqueues_a_delete_envelope_in_key_order(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keyspace = Keyspace(shards=1)
    with Publisher(client, shards=1) as publisher:
        publisher.publish("obj:1", {"n": 1}, key="a", version=1)
        deleted = publisher.delete("obj:1", key="a", version=2, tags={"why": "gone"})
        publisher.publish_many(
            [Message("obj:1", {"n": 3}, "a", 3), Message.delete("obj:1", key="b", version=7)]
        )
    assert deleted.deleted and deleted.data is None and deleted.tags == {"why": "gone"}
    raw = queued(client, keyspace)
    envelopes = [decode_envelope(entry) for entry in raw]
    assert [(e.key, e.version, e.deleted, e.data) for e in envelopes] == [
        ("a", 1, False, {"n": 1}),
        ("a", 2, True, None),
        ("a", 3, False, {"n": 3}),
        ("b", 7, True, None),
    ]
    assert raw[1].endswith(b',"data":null,"tags":{"why":"gone"},"deleted":true}')
    assert [e.seq for e in envelopes] == [1, 2, 3, 4]


async def test_the_async_publisher_deletes_too(redis_url: str) -> None:
    async with AsyncPublisher.from_url(redis_url, shards=2) as publisher:
        envelope = await publisher.delete("obj:1", key="k", version=4)
    assert envelope.deleted and envelope.data is None and envelope.seq >= 1


def test_a_delete_with_data_or_a_bad_version_is_refused(redis_url: str) -> None:
    with Publisher(redis.Redis.from_url(redis_url), shards=1) as publisher:
        with pytest.raises(InvalidMessage, match="`version`"):
            publisher.delete("obj:1", key="a", version=-1)
        with pytest.raises(InvalidMessage, match="a delete carries no data"):
            publisher.publish_many([Message("obj:1", {"x": 1}, "a", 1, deleted=True)])


def test_a_replayed_dead_letter_delete_stays_a_delete(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keyspace = Keyspace(shards=1)
    with Publisher(client, shards=1) as publisher:
        original = publisher.delete("obj:1", key="a", version=5, idempotency_key="del-a-5")
    client.delete(keyspace.shard(0).queue)
    letter = DeadLetter.for_payload(
        encode_envelope(original), shard=0, reason="rejected", error="boom", code=102
    )
    client.rpush(keyspace.shard(0).dlq, encode_dead_letter(letter))

    report = replay_dead_letters(client, keyspace)

    assert report.replayed == 1
    (raw,) = queued(client, keyspace)
    replayed = decode_envelope(raw)
    assert (replayed.key, replayed.version, replayed.deleted, replayed.data) == ("a", 5, True, None)
    assert replayed.idempotency_key == "del-a-5" and replayed.seq > original.seq
