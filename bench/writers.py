"""The database systems' producer: writers that change objects and publish in the same transaction.

``python -m bench.produce outbox|postgresql --dsn DSN ...`` runs ``produce`` below.

Each writer transaction does what docs/outbox.md asks of an application: it
bumps the version of every object it changes (``UPDATE bench_objects ...
RETURNING version``, which takes the rows' locks), then inserts one message row
per change, then commits. The message rows are

- ``outbox``: this project's outbox (``Outbox.publish_many_async``, or
  ``publish_async`` for a single message): envelopes routed to 16 lanes by key;
- ``postgresql``: rows of Centrifugo's documented outbox table, method
  ``publish`` and payload ``{"channel", "data"}`` (the command the built-in
  consumer runs), partition = the key's shard among ``num_partitions``, so a
  key's messages share one partition and the consumer keeps their order.

The keys come from the run's ``Workload`` (the same key sequence as every
other system); the versions come from the database, so when two writers race
for one object the row lock decides which commits first and gets the lower
version. Per key, the versions committed are 1..n, as for the other systems.

Several writers (``--writers``, one connection each) take transactions from one
queue. Flat out, a transaction carries up to ``--transaction-messages``
consecutive messages; at a fixed rate, whatever the 1 ms tick brought (one
message per transaction at 1,000/s). A transaction of several objects locks
them in id order first, so concurrent writers never deadlock.

Each message's ``t`` is stamped after the row update, right before the insert:
the moment an application using the direct publisher would call ``publish``
(after its own update), so the latencies compare the paths from there on:
insert + commit + forwarding against one ``publish`` round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import psycopg

from bench.workload import Workload, now_us
from centrifugo_async import Message
from centrifugo_async.outbox import Outbox
from centrifugo_async.protocol.routing import shard_for

__all__ = ["produce"]

TICK = 0.001
OBJECTS = "bench_objects"
CONSUMER_TABLE = "centrifugo_outbox"

RESET = f"TRUNCATE {OBJECTS}"
CREATE_OBJECTS = f"INSERT INTO {OBJECTS} (id, version) SELECT g, 0 FROM generate_series(0, %s) AS g"
BUMP_ONE = f"UPDATE {OBJECTS} SET version = version + %s WHERE id = %s RETURNING version"
LOCK_MANY = f"SELECT id FROM {OBJECTS} WHERE id = ANY(%s::int[]) ORDER BY id FOR UPDATE"
BUMP_MANY = (
    f"UPDATE {OBJECTS} AS o SET version = o.version + c.n "
    "FROM unnest(%s::int[], %s::int[]) AS c(id, n) WHERE o.id = c.id "
    "RETURNING o.id, o.version"
)
INSERT_COMMAND = (
    f"INSERT INTO {CONSUMER_TABLE} (method, payload, partition) VALUES ('publish', %s::jsonb, %s)"
)
INSERT_COMMANDS = (
    f"INSERT INTO {CONSUMER_TABLE} (method, payload, partition) "
    "SELECT 'publish', u.payload::jsonb, u.partition "
    "FROM unnest(%s::text[], %s::int[]) WITH ORDINALITY AS u(payload, partition, n) "
    "ORDER BY u.n"
)

_encoder = msgspec.json.Encoder()


def object_id(key: str) -> int:
    """``key:17`` -> 17: the workload's keys are the objects' ids."""
    return int(key.rpartition(":")[2])


async def bump(conn: psycopg.AsyncConnection[Any], ids: Sequence[int]) -> list[int]:
    """Bump each object once per occurrence in ``ids``; the version of each occurrence.

    Two occurrences of one object in a transaction get consecutive versions in
    their order, as if they were two updates.
    """
    counts = Counter(ids)
    if len(counts) == 1:
        ((only, times),) = counts.items()
        row = await (await conn.execute(BUMP_ONE, (times, only))).fetchone()
        assert row is not None, f"object {only} does not exist"
        last = {only: int(row[0])}
    else:
        await conn.execute(LOCK_MANY, (sorted(counts),))
        cursor = await conn.execute(BUMP_MANY, (list(counts), list(counts.values())))
        last = {int(i): int(v) for i, v in await cursor.fetchall()}
    following = {i: last[i] - times + 1 for i, times in counts.items()}
    versions = []
    for i in ids:
        versions.append(following[i])
        following[i] += 1
    return versions


class Sink(Protocol):
    """Where a transaction's messages go, inside that transaction."""

    async def insert(
        self,
        conn: psycopg.AsyncConnection[Any],
        keys: Sequence[str],
        versions: Sequence[int],
        stamp_us: int,
    ) -> None: ...


class OutboxSink:
    """This project's outbox: one envelope row per message."""

    def __init__(self, args: argparse.Namespace, pad: str) -> None:
        self.outbox = Outbox(shards=args.shards)
        self.channel = args.channel
        self.pad = pad

    async def insert(
        self,
        conn: psycopg.AsyncConnection[Any],
        keys: Sequence[str],
        versions: Sequence[int],
        stamp_us: int,
    ) -> None:
        def data(key: str, version: int) -> dict[str, Any]:
            return {"key": key, "version": version, "t": stamp_us, "pad": self.pad}

        if len(keys) == 1:
            key, version = keys[0], versions[0]
            await self.outbox.publish_async(
                conn, self.channel, data(key, version), key=key, version=version
            )
            return
        messages = [
            Message(self.channel, data(k, v), k, v) for k, v in zip(keys, versions, strict=True)
        ]
        await self.outbox.publish_many_async(conn, messages)


class ConsumerSink:
    """Centrifugo's documented outbox table: a ``publish`` command per message."""

    def __init__(self, args: argparse.Namespace, pad: str) -> None:
        self.channel = args.channel
        self.partitions = args.partitions
        self.pad = pad

    async def insert(
        self,
        conn: psycopg.AsyncConnection[Any],
        keys: Sequence[str],
        versions: Sequence[int],
        stamp_us: int,
    ) -> None:
        payloads = [
            _encoder.encode(
                {
                    "channel": self.channel,
                    "data": {"key": k, "version": v, "t": stamp_us, "pad": self.pad},
                }
            ).decode()
            for k, v in zip(keys, versions, strict=True)
        ]
        partitions = [shard_for(k, self.partitions) for k in keys]
        if len(keys) == 1:
            await conn.execute(INSERT_COMMAND, (payloads[0], partitions[0]))
        else:
            await conn.execute(INSERT_COMMANDS, (payloads, partitions))


class Writers:
    """``--writers`` connections taking transactions (lists of keys) from one queue."""

    def __init__(self, args: argparse.Namespace, sink: Sink) -> None:
        self.args = args
        self.sink = sink
        self.queue: asyncio.Queue[list[str] | None] = asyncio.Queue()
        self.transactions = 0

    async def run(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while (keys := await self.queue.get()) is not None:
            async with conn.transaction():
                versions = await bump(conn, [object_id(k) for k in keys])
                await self.sink.insert(conn, keys, versions, now_us())
            self.transactions += 1

    def finish(self) -> None:
        for _ in range(self.args.writers):
            self.queue.put_nowait(None)


async def produce(args: argparse.Namespace, mark_start: Callable[[], int]) -> dict[str, Any]:
    """Write the run's messages through ``args.writers`` concurrent writers; the timings."""
    workload = Workload(args.keys, args.payload_bytes)
    sink: Sink = (OutboxSink if args.mode == "outbox" else ConsumerSink)(args, workload.pad)
    writers = Writers(args, sink)
    keys = [key for key, _ in workload.key_versions(args.count)]
    size = args.transaction_messages
    conns = [
        await psycopg.AsyncConnection.connect(args.dsn, autocommit=True)
        for _ in range(args.writers)
    ]
    try:
        await conns[0].execute(RESET)
        await conns[0].execute(CREATE_OBJECTS, (args.keys - 1,))
        result: dict[str, Any] = {}
        if args.rate <= 0:
            for start in range(0, len(keys), size):
                writers.queue.put_nowait(keys[start : start + size])
            writers.finish()
            result["first_enqueue_us"] = mark_start()
            await asyncio.gather(*(writers.run(conn) for conn in conns))
        else:
            tasks = [asyncio.create_task(writers.run(conn)) for conn in conns]
            started = time.perf_counter()
            sent = 0
            while sent < args.count:
                due = min(args.count, int((time.perf_counter() - started) * args.rate) + 1)
                if due > sent:
                    if not sent:
                        result["first_enqueue_us"] = mark_start()
                    for start in range(sent, due, size):
                        writers.queue.put_nowait(keys[start : min(due, start + size)])
                    sent = due
                delay = min(TICK, started + sent / args.rate - time.perf_counter())
                if delay > 0:
                    await asyncio.sleep(delay)
            writers.finish()
            await asyncio.gather(*tasks)
            result["offered_rate"] = round(args.count / (time.perf_counter() - started))
        result["last_enqueue_us"] = now_us()
        result["transactions"] = writers.transactions
        return result
    finally:
        for conn in conns:
            await conn.close()
