"""Publisher -> Redis -> relay -> real Centrifugo -> real WebSocket subscriber.

The relay reaches Centrifugo through the recording proxy, which gives every
attempt its own idempotency key: a message sent twice reaches the subscriber
twice instead of being absorbed by Centrifugo's idempotency window.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import redis

from centrifugo_async import AsyncPublisher, Message
from centrifugo_async.admin import collect_stats, recorded_keyspace
from centrifugo_async.relay import RelaySettings
from devstack import CentrifugoServer
from tests.support.checks import (
    order_inversions,
    published_pairs,
    seq_gaps,
    seq_inversions,
    versions_by_key,
)
from tests.support.relay_proxy import RecordingProxy
from tests.support.subscriber import Subscriber

KEYS = 200
MESSAGES = 10_000
PUBLISHERS = 4
CHANNELS = [f"obj:e2e-{n}" for n in range(10)]


def channel_of(key_index: int) -> str:
    return CHANNELS[key_index % len(CHANNELS)]


async def publish_interleaved(redis_url: str, publisher_index: int, seed: int) -> list[Message]:
    """One of several publishers; each owns the keys ``i % PUBLISHERS == publisher_index``.

    Mixes single publishes with small batches and yields between calls so the
    publishers' writes interleave on the shared shards.
    """
    rng = random.Random(seed)
    owned = [i for i in range(KEYS) if i % PUBLISHERS == publisher_index]
    next_version = dict.fromkeys(owned, 1)
    todo = MESSAGES // PUBLISHERS
    sent: list[Message] = []
    async with AsyncPublisher.from_url(redis_url, shards=8) as publisher:
        while todo:
            batch = []
            for _ in range(min(todo, rng.choice([1, 1, 5, 40]))):
                k = rng.choice(owned)
                batch.append(Message(channel_of(k), {"n": len(sent)}, f"key-{k}", next_version[k]))
                next_version[k] += 1
            if len(batch) == 1:
                m = batch[0]
                await publisher.publish(m.channel, m.data, key=m.key, version=m.version)
            else:
                await publisher.publish_many(batch)
            sent.extend(batch)
            todo -= len(batch)
            await asyncio.sleep(0)
    return sent


async def test_every_message_arrives_once_in_per_key_and_per_shard_order(
    proxied_relay: RelaySettings, centrifugo: CentrifugoServer, recording_proxy: RecordingProxy
) -> None:
    running_relay = proxied_relay
    async with Subscriber(centrifugo.ws_url, CHANNELS) as subscriber:
        batches = await asyncio.gather(
            *(publish_interleaved(running_relay.redis_url, p, seed=p) for p in range(PUBLISHERS))
        )
        sent = [m for batch in batches for m in batch]
        assert len(sent) == MESSAGES
        received = await subscriber.wait_for(MESSAGES, within=90)
        received = await subscriber.settle(quiet=0.5)

    assert len(received) == MESSAGES, "duplicates reached the subscriber"
    assert published_pairs(received) == {(m.key, m.version) for m in sent}
    assert order_inversions(received) == 0
    assert all(v == sorted(v) for v in versions_by_key(received).values())
    # The publication data is the envelope: channel and shard match the routing.
    assert Counter(e["channel"] for e in received) == Counter(m.channel for m in sent)

    client = redis.Redis.from_url(running_relay.redis_url)
    stats = collect_stats(client, recorded_keyspace(client, running_relay.prefix))
    assert sum(s.delivered for s in stats) == MESSAGES
    assert sum(s.queued + s.in_flight + s.dead_letters for s in stats) == 0

    # What the relay sent: each (shard, seq) once, under its lease, in seq order.
    log = recording_proxy.log
    assert len(log) == MESSAGES
    assert log.stale() == []
    assert log.repeats() == {}, log.summary()
    assert log.order_violations() == {}
    last_seq = {s.shard: s.seq for s in stats}
    assert log.never_accepted(last_seq) == {}
    # And what arrived: per channel, each shard's seqs in order, none missing.
    assert seq_inversions(received) == 0
    assert seq_gaps(received, last_seq) == {}
