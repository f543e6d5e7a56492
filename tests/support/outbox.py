"""An application's table of objects, writers that update it through the outbox, and checks.

Each writer transaction does what docs/outbox.md asks of an application: bump
the object's version with an ``UPDATE ... RETURNING`` (taking the row lock),
then publish that version through the outbox, then commit. What the database
holds at the end is the truth every test compares the subscriber against.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from centrifugo_async import outbox
from centrifugo_async.outbox.forwarder import forward
from centrifugo_async.outbox.metrics import ForwarderMetrics
from centrifugo_async.outbox.settings import ForwarderSettings
from tests.support.subscriber import Subscriber

CHANNELS = [f"obj:outbox-{n}" for n in range(10)]


def namespace(dsn: str) -> str:
    """The test's database name: part of every key, so no two tests share a key.

    Centrifugo drops a publication whose idempotency key (channel, key, version)
    it saw within five minutes, and every test publishes versions 1, 2, ...
    """
    return dsn.rsplit("/", 1)[1]


def key_of(obj: int, space: str) -> str:
    return f"{space}-object-{obj}"


def channel_of(obj: int) -> str:
    return CHANNELS[obj % len(CHANNELS)]


def create_objects(dsn: str, count: int) -> None:
    """The outbox schema plus ``objects(id, version)``, every version at 0."""
    with psycopg.connect(dsn) as conn:
        outbox.init_schema(conn)
        conn.execute("CREATE TABLE objects (id int PRIMARY KEY, version bigint NOT NULL)")
        conn.execute(
            "INSERT INTO objects SELECT g, 0 FROM generate_series(0, %s) AS g", (count - 1,)
        )
        conn.commit()


def committed_versions(dsn: str) -> dict[str, int]:
    """Each object's version as committed: every version up to it must be delivered."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, version FROM objects").fetchall()
    return {key_of(obj, namespace(dsn)): int(version) for obj, version in rows}


def outbox_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM centrifugo_outbox").fetchone()
    return int(row[0]) if row else 0


async def update_and_publish(
    conn: psycopg.AsyncConnection[Any], obj: int, space: str, *, roll_back: bool = False
) -> int:
    """One application transaction: bump the object's version and publish it."""

    class RolledBack(Exception):
        pass

    with contextlib.suppress(RolledBack):
        async with conn.transaction():
            cursor = await conn.execute(
                "UPDATE objects SET version = version + 1 WHERE id = %s RETURNING version", (obj,)
            )
            row = await cursor.fetchone()
            assert row is not None
            version = int(row[0])
            data = {"rolled_back": roll_back, "version": version}
            await outbox.publish_async(
                conn, channel_of(obj), data, key=key_of(obj, space), version=version
            )
            if roll_back:
                raise RolledBack
            return version
    return -1


async def writer(
    dsn: str,
    objects: int,
    transactions: int,
    seed: int,
    *,
    rollback_every: int = 0,
    retry_outages: bool = False,
) -> int:
    """``transactions`` updates of random objects; every ``rollback_every``-th rolls back.

    With ``retry_outages`` a lost connection is opened again (a transaction in
    flight then either committed or not: the database decides, not the writer).
    """
    rng = random.Random(seed)
    done = 0
    conn: psycopg.AsyncConnection[Any] | None = None
    try:
        while done < transactions:
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=5)
                roll_back = rollback_every > 0 and done % rollback_every == rollback_every - 1
                obj = rng.randrange(objects)
                await update_and_publish(conn, obj, namespace(dsn), roll_back=roll_back)
                done += 1
            except psycopg.OperationalError:
                if not retry_outages:
                    raise
                if conn is not None:
                    await conn.close()
                conn = None
                await asyncio.sleep(0.05)
            await asyncio.sleep(0)
    finally:
        if conn is not None:
            await conn.close()
    return done


@contextlib.asynccontextmanager
async def running_forwarder(
    dsn: str, redis_url: str, **overrides: Any
) -> AsyncIterator[ForwarderMetrics]:
    """An in-process forwarder (``forward()``) with short timers, stopped on exit."""
    options: dict[str, Any] = dict(
        metrics_port=0,
        poll_interval=0.2,
        claim_interval=0.2,
        retry_initial=0.05,
        retry_max=0.5,
        sample_interval=0.5,
    )
    options.update(overrides)
    settings = ForwarderSettings(dsn=dsn, redis_url=redis_url, **options)
    metrics = ForwarderMetrics()
    stop = asyncio.Event()
    task = asyncio.create_task(forward(settings, stop=stop, metrics=metrics))
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def expected_pairs(versions: dict[str, int]) -> set[tuple[str, int]]:
    return {(key, v) for key, last in versions.items() for v in range(1, last + 1)}


async def wait_for_pairs(
    subscriber: Subscriber, expected: set[tuple[str, int]], within: float
) -> None:
    """Wait until every expected (key, version) was received (or fail after ``within`` s)."""
    async with asyncio.timeout(within):
        while True:
            subscriber.changed.clear()
            if expected <= {(e["key"], e["version"]) for e in subscriber.received}:
                return
            await subscriber.changed.wait()


def metric_value(metrics: ForwarderMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0
