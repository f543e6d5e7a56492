"""Faults around the outbox: nothing committed is lost, and each key's order is kept.

The writer dies right after a commit; the forwarder dies mid-batch and comes
back; two forwarders share the lanes and one of them dies; PostgreSQL restarts
mid-stream; Redis goes away for a while. Every test compares what a real
WebSocket subscriber received with what the database committed.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import pytest
import redis

from centrifugo_async import Keyspace, decode_envelope
from centrifugo_async.outbox import OutboxTable
from centrifugo_async.outbox.stats import lane_backlog
from centrifugo_async.protocol import topology
from centrifugo_async.relay import RelaySettings, serve
from devstack import CentrifugoServer, ForwarderProcess, PostgresServer, RedisServer
from tests.support.checks import order_inversions, published_pairs
from tests.support.outbox import (
    CHANNELS,
    committed_versions,
    create_objects,
    expected_pairs,
    key_of,
    metric_value,
    namespace,
    outbox_rows,
    running_forwarder,
    wait_for_pairs,
    writer,
)
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.postgres

OBJECTS = 50


@pytest.fixture
def forwarders() -> Iterator[list[ForwarderProcess]]:
    started: list[ForwarderProcess] = []
    yield started
    for process in started:
        process.close()


def new_forwarder(started: list[ForwarderProcess], dsn: str, redis_url: str) -> ForwarderProcess:
    process = ForwarderProcess(
        dsn, redis_url, "--poll-interval", "0.1", "--claim-interval", "0.1", "--batch", "20"
    )
    started.append(process)
    return process.start()


def assert_delivered_in_order(received: list[dict[str, Any]], dsn: str) -> None:
    versions = committed_versions(dsn)
    assert published_pairs(received) == expected_pairs(versions)
    assert order_inversions(received) == 0
    assert outbox_rows(dsn) == 0


async def wait_until(condition: Any, within: float, what: str) -> None:
    """Poll ``condition()`` every 50 ms until it is true (or fail after ``within`` s)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a condition in another process
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["outbox", "direct"])
async def test_a_writer_killed_right_after_its_commit_loses_nothing_through_the_outbox(
    mode: str, postgres_dsn: str, running_relay: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    create_objects(postgres_dsn, 5)
    async with (
        Subscriber(centrifugo.ws_url, CHANNELS) as subscriber,
        running_forwarder(postgres_dsn, running_relay.redis_url),
    ):
        command = [sys.executable, "-m", "tests.support.outbox_writer"]
        options = ["--dsn", postgres_dsn, "--redis-url", running_relay.redis_url]
        writer_process = await asyncio.to_thread(
            subprocess.run, [*command, *options, "--mode", mode], timeout=60
        )
        assert writer_process.returncode == -signal.SIGKILL
        versions = committed_versions(postgres_dsn)
        assert sum(versions.values()) == 20
        expected = expected_pairs(versions)
        # The 20th transaction updates object 4 to version 4.
        last_commit = (key_of(4, namespace(postgres_dsn)), 4)
        if mode == "outbox":
            await wait_for_pairs(subscriber, expected, within=30)
        else:
            await wait_for_pairs(subscriber, expected - {last_commit}, within=30)
        received = await subscriber.settle(quiet=0.5)

    if mode == "outbox":
        assert published_pairs(received) == expected
        assert order_inversions(received) == 0
    else:
        # The dual write: the commit happened, its publish never did, and the page stays stale.
        assert published_pairs(received) == expected - {last_commit}


async def test_a_forwarder_killed_mid_batch_and_restarted_loses_nothing_and_keeps_order(
    postgres_dsn: str,
    running_relay: RelaySettings,
    centrifugo: CentrifugoServer,
    forwarders: list[ForwarderProcess],
) -> None:
    create_objects(postgres_dsn, OBJECTS)
    client = redis.Redis.from_url(running_relay.redis_url)
    topology.record_shards(client, running_relay.prefix, 16)
    async with Subscriber(centrifugo.ws_url, CHANNELS) as subscriber:
        await asyncio.gather(*(writer(postgres_dsn, OBJECTS, 100, seed) for seed in range(4)))
        assert outbox_rows(postgres_dsn) == 400

        # Writes paused in Redis: the forwarder's enqueue waits there while its
        # transaction holds the batch it read, and it is killed at that moment.
        client.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        try:
            forwarder = new_forwarder(forwarders, postgres_dsn, running_relay.redis_url)
            await wait_until(
                lambda: forwarder_in_transaction(postgres_dsn), 20, "forwarder mid-batch"
            )
            forwarder.signal(signal.SIGKILL)
            forwarder.wait(10)
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
        assert outbox_rows(postgres_dsn) == 400, "rows were deleted before their enqueue"

        forwarder.start()
        await asyncio.gather(*(writer(postgres_dsn, OBJECTS, 50, seed) for seed in range(4, 6)))
        await wait_for_pairs(subscriber, expected_pairs(committed_versions(postgres_dsn)), 60)
        received = await subscriber.settle(quiet=0.5)
    client.close()
    assert_delivered_in_order(received, postgres_dsn)


def forwarder_in_transaction(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'ca-outbox:%%' "
            "AND state = 'idle in transaction'"
        ).fetchone()
    return bool(row and row[0])


def lane_owners(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        lanes = lane_backlog(conn, OutboxTable())
    return {lane.lane: lane.owner for lane in lanes if lane.owner}


async def test_two_forwarders_share_the_lanes_and_one_takes_over_when_the_other_dies(
    postgres_dsn: str,
    running_relay: RelaySettings,
    centrifugo: CentrifugoServer,
    forwarders: list[ForwarderProcess],
) -> None:
    create_objects(postgres_dsn, OBJECTS)
    first = new_forwarder(forwarders, postgres_dsn, running_relay.redis_url)
    second = new_forwarder(forwarders, postgres_dsn, running_relay.redis_url)
    await wait_until(lambda: len(lane_owners(postgres_dsn)) == 16, 20, "every lane owned")
    async with Subscriber(centrifugo.ws_url, CHANNELS) as subscriber:
        writers = asyncio.gather(*(writer(postgres_dsn, OBJECTS, 150, seed) for seed in range(4)))
        await wait_until(lambda: outbox_rows(postgres_dsn) < 600 - 1, 30, "writers running")
        owners = lane_owners(postgres_dsn)
        # The process holding lane 0 dies; the other one must take all its lanes.
        victim = first if f":{first.pid}:" in owners[0] else second
        survivor = second if victim is first else first
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        await wait_until(
            lambda: set(lane_owners(postgres_dsn).values()) == {owners_of(survivor, postgres_dsn)},
            20,
            "the survivor owns every lane",
        )
        await writers
        await wait_for_pairs(subscriber, expected_pairs(committed_versions(postgres_dsn)), 60)
        received = await subscriber.settle(quiet=0.5)
    assert len(lane_owners(postgres_dsn)) == 16
    assert_delivered_in_order(received, postgres_dsn)


def owners_of(process: ForwarderProcess, dsn: str) -> str:
    """The forwarder id (``host:pid:random``) of ``process``, as ``outbox stats`` shows it."""
    names = {owner for owner in lane_owners(dsn).values() if f":{process.pid}:" in owner}
    return names.pop() if len(names) == 1 else f"<pid {process.pid}>"


async def test_postgres_restarted_mid_stream(
    running_relay: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    with PostgresServer() as postgres:
        dsn = postgres.create_database()
        create_objects(dsn, OBJECTS)
        async with (
            Subscriber(centrifugo.ws_url, CHANNELS) as subscriber,
            running_forwarder(dsn, running_relay.redis_url) as metrics,
        ):
            writers = asyncio.gather(
                *(writer(dsn, OBJECTS, 150, seed, retry_outages=True) for seed in range(4))
            )
            forwarded = "centrifugo_async_outbox_forwarded_total"
            await wait_until(lambda: metric_value(metrics, forwarded) >= 50, 30, "forwarding")
            await asyncio.to_thread(postgres.restart)
            done = await writers
            assert done == [150] * 4
            await wait_for_pairs(subscriber, expected_pairs(committed_versions(dsn)), 60)
            received = await subscriber.settle(quiet=0.5)
            retries = metric_value(
                metrics, "centrifugo_async_outbox_retries_total", error_class="postgres"
            )
        assert retries >= 1, "the forwarder never saw PostgreSQL go away"
        assert_delivered_in_order(received, dsn)


async def test_redis_unavailable_for_a_while_rows_wait_in_the_outbox(
    postgres_dsn: str, relay_settings: RelaySettings, centrifugo: CentrifugoServer
) -> None:
    create_objects(postgres_dsn, OBJECTS)
    with RedisServer(persistent=True) as own_redis:
        settings = attrs.evolve(relay_settings, redis_url=own_redis.url)
        stop_relay = asyncio.Event()
        relay = asyncio.create_task(serve(settings, stop=stop_relay))
        try:
            async with (
                Subscriber(centrifugo.ws_url, CHANNELS) as subscriber,
                running_forwarder(postgres_dsn, own_redis.url) as metrics,
            ):
                await writer(postgres_dsn, OBJECTS, 50, seed=1)
                await wait_for_pairs(
                    subscriber, expected_pairs(committed_versions(postgres_dsn)), 30
                )
                own_redis.stop()
                await asyncio.gather(*(writer(postgres_dsn, OBJECTS, 100, s) for s in (2, 3)))
                retried = "centrifugo_async_outbox_retries_total"
                await wait_until(
                    lambda: metric_value(metrics, retried, error_class="redis") >= 3, 30, "retries"
                )
                assert outbox_rows(postgres_dsn) == 200, "rows must wait while Redis is away"
                own_redis.start()
                await wait_for_pairs(
                    subscriber, expected_pairs(committed_versions(postgres_dsn)), 60
                )
                received = await subscriber.settle(quiet=0.5)
        finally:
            stop_relay.set()
            await asyncio.wait_for(relay, 30)
    assert_delivered_in_order(received, postgres_dsn)


async def test_a_hung_redis_times_out_and_the_forwarder_recovers_when_it_answers(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that accepts but never answers (SIGSTOPped) is a timeout, not a hang.

    The redis-py versions the package allows differ: 5.x waits for a reply
    forever, 8.x gives up after 5 s by default. The forwarder's own
    ``redis_timeout`` (0.5 s here) must apply either way, so two timeouts are
    expected well before the first 5 s default would have fired.
    """
    create_objects(postgres_dsn, OBJECTS)
    with RedisServer() as own_redis:
        try:
            async with running_forwarder(postgres_dsn, own_redis.url, redis_timeout=0.5) as metrics:
                await writer(postgres_dsn, OBJECTS, 20, seed=4)
                await wait_until(lambda: outbox_rows(postgres_dsn) == 0, 30, "first rows forwarded")
                own_redis.signal(signal.SIGSTOP)
                await writer(postgres_dsn, OBJECTS, 30, seed=5)
                retried = "centrifugo_async_outbox_retries_total"
                await wait_until(
                    lambda: metric_value(metrics, retried, error_class="redis") >= 2,
                    4.5,
                    "two timeouts of 0.5 s reported as retries",
                )
                assert outbox_rows(postgres_dsn) == 30, "rows wait while Redis hangs"
                own_redis.signal(signal.SIGCONT)
                await wait_until(lambda: outbox_rows(postgres_dsn) == 0, 30, "rows forwarded")
        finally:
            own_redis.signal(signal.SIGCONT)
        client = redis.Redis.from_url(own_redis.url)
        shards = topology.read_shards(client, "centrifugo.publish")
        assert shards is not None
        queued = {
            (envelope.key, envelope.version)
            for keys in Keyspace(shards=shards).all_shards()
            for envelope in map(decode_envelope, client.lrange(keys.queue, 0, -1))  # type: ignore[arg-type]
        }
    assert queued == expected_pairs(committed_versions(postgres_dsn)), "every row reached Redis"
    timeouts = [
        r
        for r in caplog.records
        if r.getMessage() == "redis unavailable, rows wait" and "Timeout" in r.error  # type: ignore[attr-defined]
    ]
    assert timeouts, "the forwarder logs the timeout"
