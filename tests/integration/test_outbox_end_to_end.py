"""Writers -> outbox -> forwarder -> Redis -> relay -> Centrifugo -> a WebSocket subscriber."""

from __future__ import annotations

import asyncio

import pytest
import redis

from centrifugo_async.admin import collect_stats, recorded_keyspace
from centrifugo_async.relay import RelaySettings
from devstack import CentrifugoServer
from tests.support.checks import order_inversions, published_pairs, versions_by_key
from tests.support.outbox import (
    CHANNELS,
    committed_versions,
    create_objects,
    expected_pairs,
    outbox_rows,
    running_forwarder,
    wait_for_pairs,
    writer,
)
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.postgres

OBJECTS = 200
WRITERS = 8
TRANSACTIONS = 250  # per writer
ROLLBACK_EVERY = 10


async def test_every_committed_version_arrives_in_order_and_rollbacks_publish_nothing(
    postgres_dsn: str, running_relay: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    create_objects(postgres_dsn, OBJECTS)
    async with (
        Subscriber(centrifugo.ws_url, CHANNELS) as subscriber,
        running_forwarder(postgres_dsn, running_relay.redis_url) as metrics,
    ):
        done = await asyncio.gather(
            *(
                writer(postgres_dsn, OBJECTS, TRANSACTIONS, seed, rollback_every=ROLLBACK_EVERY)
                for seed in range(WRITERS)
            )
        )
        assert sum(done) == WRITERS * TRANSACTIONS
        versions = committed_versions(postgres_dsn)
        expected = expected_pairs(versions)
        committed = WRITERS * TRANSACTIONS * (ROLLBACK_EVERY - 1) // ROLLBACK_EVERY
        assert len(expected) == committed
        await wait_for_pairs(subscriber, expected, within=90)
        received = await subscriber.settle(quiet=0.5)

    assert published_pairs(received) == expected, "a committed version is missing, or extra"
    assert len(received) == len(expected), "duplicates reached the subscriber"
    assert not any(e["data"]["rolled_back"] for e in received)
    assert order_inversions(received) == 0
    assert all(v == list(range(1, versions[k] + 1)) for k, v in versions_by_key(received).items())
    assert outbox_rows(postgres_dsn) == 0
    assert metrics.registry.get_sample_value("centrifugo_async_outbox_forwarded_total") == committed

    client = redis.Redis.from_url(running_relay.redis_url)
    stats = collect_stats(client, recorded_keyspace(client, running_relay.prefix))
    assert sum(s.delivered for s in stats) == committed
    assert sum(s.queued + s.in_flight + s.dead_letters for s in stats) == 0
