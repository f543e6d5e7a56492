"""The example app's outbox mode: the price board in PostgreSQL, published through the outbox.

The same table as the SQLite mode (``objects(key, version, data, deleted)``),
the same routes and the same page; only the write path differs. Each change is
one PostgreSQL transaction that

1. locks the product's row (``SELECT ... FOR UPDATE``; a product that does not
   exist yet gets a placeholder row first, so two creators queue on it too),
2. writes the new data at ``version + 1`` (a delete keeps a tombstone),
3. inserts the message into the outbox table (``Outbox.publish``),

and commits. The message exists if and only if the change committed: the
backend never talks to Redis to publish, so a backend that dies right after
its commit (``?crash=after-commit``) loses nothing: the forwarder
(``centrifugo-async outbox forward``) moves the committed row to Redis. The row
lock is what keeps each product's messages in commit order: the second writer
of a product waits for the first one's commit, so its outbox row comes later
(docs/outbox.md, "Per-key order").

The outbox table itself is the deployment's to create (``centrifugo-async
outbox init``; the launcher's stack does it before it starts the forwarder);
``initialize`` only checks that it is there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
import redis
from psycopg.types.json import Json
from starlette.concurrency import run_in_threadpool

from centrifugo_async import Message
from centrifugo_async.outbox import Outbox, check_schema
from centrifugo_async.outbox.stats import lane_backlog

from .server import AfterCommit, AppSettings, Change, StoredObject, queue_delivery

__all__ = ["OutboxBoard", "PostgresObjectStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key text PRIMARY KEY,
    version bigint NOT NULL,
    data json NOT NULL,
    deleted boolean NOT NULL DEFAULT false
)
"""

_ROW = "SELECT key, version, data, deleted FROM objects"


def _stored(key: str, version: int, data: Any, deleted: bool) -> StoredObject:
    return StoredObject(key, int(version), None if deleted else data, deleted)


class PostgresObjectStore:
    """Versioned objects in PostgreSQL, each change with its outbox row. Blocking:
    call it from a thread. One connection per call keeps the example free of a
    pool; a real backend would use one (psycopg_pool, or its framework's)."""

    def __init__(self, dsn: str, outbox: Outbox, channel: str) -> None:
        self.dsn = dsn
        self.outbox = outbox
        self.channel = channel

    def _connect(self) -> psycopg.Connection[Any]:
        # Autocommit: transactions are the explicit `with conn.transaction()` blocks.
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)

    def initialize(self, seed: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Create the table and seed it when empty; the outbox schema must be there."""
        with self._connect() as conn:
            check_schema(conn, self.outbox.table)
            with conn.transaction():
                conn.execute(SCHEMA)
                conn.execute("LOCK TABLE objects IN SHARE ROW EXCLUSIVE MODE")
                row = conn.execute("SELECT count(*) FROM objects").fetchone()
                if row is not None and row[0] == 0:
                    with conn.cursor() as cursor:
                        cursor.executemany(
                            "INSERT INTO objects (key, version, data) VALUES (%s, 1, %s)",
                            [(key, Json(data)) for key, data in seed],
                        )

    def all(self) -> list[StoredObject]:
        """Every object and every tombstone, by key."""
        with self._connect() as conn:
            rows = conn.execute(f"{_ROW} ORDER BY key").fetchall()
        return [_stored(*row) for row in rows]

    def get(self, key: str) -> StoredObject | None:
        """One object or its tombstone; None when it never existed."""
        with self._connect() as conn:
            row = conn.execute(f"{_ROW} WHERE key = %s", (key,)).fetchone()
        return None if row is None else _stored(*row)

    def keys(self) -> list[str]:
        """The keys of the objects that exist (tombstones left out)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT key FROM objects WHERE NOT deleted ORDER BY key")
            return [key for (key,) in rows]

    def update(self, key: str, change: Change) -> StoredObject:
        """Apply ``change`` to ``key``, bump its version and write its outbox row,
        in one transaction.

        The placeholder (a tombstone at version 0) gives a new key a row to lock:
        a concurrent creator waits on the primary key until this transaction
        ends, then finds the row and locks it. The placeholder never shows: this
        transaction either overwrites it or rolls it back.
        """
        with self._connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO objects (key, version, data, deleted) "
                "VALUES (%s, 0, 'null', true) ON CONFLICT (key) DO NOTHING",
                (key,),
            )
            row = conn.execute(
                "SELECT version, data, deleted FROM objects WHERE key = %s FOR UPDATE", (key,)
            ).fetchone()
            assert row is not None
            version = int(row[0]) + 1  # counting on after a delete
            data = change(None if row[2] else row[1])  # raising here rolls everything back
            conn.execute(
                "UPDATE objects SET version = %s, data = %s, deleted = false WHERE key = %s",
                (version, Json(data), key),
            )
            self.outbox.publish(conn, self.channel, data, key=key, version=version)
        return StoredObject(key, version, data)

    def delete(self, key: str) -> StoredObject | None:
        """Delete ``key`` (bump its version, keep a tombstone) and write the delete's
        outbox row, in one transaction. None when there is no such object."""
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "SELECT version FROM objects WHERE key = %s AND NOT deleted FOR UPDATE", (key,)
            ).fetchone()
            if row is None:
                return None
            version = int(row[0]) + 1
            conn.execute(
                "UPDATE objects SET version = %s, data = 'null', deleted = true WHERE key = %s",
                (version, key),
            )
            self.outbox.publish_many(conn, [Message.delete(self.channel, key=key, version=version)])
        return StoredObject(key, version, None, deleted=True)

    def outbox_backlog(self) -> tuple[int, int | None]:
        """Rows not forwarded yet, and the oldest one's age in ms (None: none waits)."""
        with self._connect() as conn:
            lanes = lane_backlog(conn, self.outbox.table)
        ages = [lane.oldest_age_ms for lane in lanes if lane.oldest_age_ms is not None]
        return sum(lane.rows for lane in lanes), max(ages, default=None)


class OutboxBoard:
    """The app's logic in the outbox mode: the change and its message commit together."""

    def __init__(self, settings: AppSettings, queues: redis.Redis) -> None:
        if settings.postgres_dsn is None:
            raise ValueError("OutboxBoard needs AppSettings.postgres_dsn")
        self.settings = settings
        self.store = PostgresObjectStore(
            settings.postgres_dsn, Outbox(shards=settings.shards), settings.channel
        )
        self.queues = queues

    def delivery(self) -> dict[str, int | None]:
        """What waits for the pages: the outbox rows (for the forwarder) and the
        queues (for the relay), with the oldest one's age. Blocking."""
        waiting = queue_delivery(self.queues, self.settings.shards)
        rows, oldest = self.store.outbox_backlog()
        ages = [age for age in (waiting["oldest_age_ms"], oldest) if age is not None]
        return {**waiting, "outbox": rows, "oldest_age_ms": max(ages, default=None)}

    async def update(
        self, key: str, change: Change, after_commit: AfterCommit | None = None
    ) -> tuple[StoredObject, str | None]:
        """Commit the change with its outbox row. There is nothing left to publish
        afterwards, so nothing can fail (or be lost) after the commit."""
        stored = await run_in_threadpool(self.store.update, key, change)
        if after_commit is not None:
            after_commit()
        return stored, None

    async def delete(self, key: str) -> tuple[StoredObject | None, str | None]:
        """Commit the delete with its outbox row; None if there is no such object."""
        return await run_in_threadpool(self.store.delete, key), None

    async def close(self) -> None:
        self.queues.close()
