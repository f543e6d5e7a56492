"""The PostgreSQL of a database system's stack: a private cluster, its tables, the consumer config.

Both database systems get the same fresh cluster (devstack's ``PostgresServer``:
loopback, ``fsync`` off, so the disk under the machine is not what is compared)
with one database holding the application's table ``bench_objects(id,
version)``, whose row versions the writers bump, and the system's outbox table:

- ``outbox``: this project's schema, as ``centrifugo-async outbox init`` creates it;
- ``postgresql``: the table Centrifugo's documentation gives for its built-in
  ``postgresql`` consumer, with its documented LISTEN/NOTIFY trigger (one
  ``pg_notify`` per row, the partition as payload), so the consumer wakes on
  inserts instead of waiting for its 300 ms poll.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import psycopg

from centrifugo_async import outbox
from centrifugo_async.outbox import OutboxTable
from devstack import PostgresServer

from .systems import System

__all__ = [
    "CONSUMER_NAME",
    "CONSUMER_TABLE",
    "NOTIFY_CHANNEL",
    "OBJECTS_TABLE",
    "Database",
    "consumer_config",
    "held_lanes",
]

OBJECTS_TABLE = "bench_objects"
CONSUMER_TABLE = "centrifugo_outbox"
"""The built-in consumer's table, by its documented name (its own database: no clash)."""
NOTIFY_CHANNEL = "centrifugo_partition_change"
CONSUMER_NAME = "bench"

OBJECTS_SQL = f"CREATE TABLE {OBJECTS_TABLE} (id int PRIMARY KEY, version bigint NOT NULL)"

CONSUMER_SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS {CONSUMER_TABLE} (
    id BIGSERIAL PRIMARY KEY,
    method text NOT NULL,
    payload JSONB NOT NULL,
    partition INTEGER NOT NULL default 0,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL
);
CREATE OR REPLACE FUNCTION centrifugo_notify_partition_change() RETURNS TRIGGER AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', NEW.partition::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER centrifugo_notify_partition_trigger
AFTER INSERT ON {CONSUMER_TABLE}
FOR EACH ROW EXECUTE FUNCTION centrifugo_notify_partition_change();
"""
"""Centrifugo v6's documented outbox table and notification trigger (docs: server/consumers),
unchanged: no index beyond the primary key, as a team following the docs would have it."""


def consumer_config(system: System, dsn: str) -> dict[str, Any]:
    """Centrifugo's ``consumers[]`` entry for the built-in consumer: the documented
    options, ``num_partitions`` for parallel partitions (each in id order), the rest
    at their defaults (``partition_select_limit`` 100, ``partition_poll_interval`` 300ms)."""
    return {
        "name": CONSUMER_NAME,
        "enabled": True,
        "type": "postgresql",
        "postgresql": {
            "dsn": dsn,
            "outbox_table_name": CONSUMER_TABLE,
            "num_partitions": system.partitions,
            "partition_notification_channel": NOTIFY_CHANNEL,
        },
    }


HOLD_OUTBOX_LANES = (
    "SELECT pg_advisory_lock(%s::int, lane) FROM generate_series(0, %s::int) AS lane"
)
HOLD_PARTITIONS = (
    "SELECT pg_advisory_lock(hashtext(%s::text || partition)) "
    "FROM generate_series(0, %s::int) AS partition"
)


@contextlib.contextmanager
def held_lanes(system: System, dsn: str) -> Iterator[None]:
    """Hold every lane's (partition's) advisory lock, so the system's consumer moves nothing.

    The outbox forwarder takes a lane only when its ``(lock class, lane)`` lock is
    free; Centrifugo's built-in consumer takes
    ``hashtext('centrifugo_partition_lock_<consumer>' || partition)`` for each
    transaction and blocks while it is held. Leaving the block ends the session,
    which frees them all at once: a backlog written meanwhile is then drained.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        if system.kind == "outbox":
            conn.execute(HOLD_OUTBOX_LANES, (OutboxTable().lock_class, system.shards - 1))
        else:
            prefix = f"centrifugo_partition_lock_{CONSUMER_NAME}"
            conn.execute(HOLD_PARTITIONS, (prefix, system.partitions - 1))
        yield


class Database:
    """A fresh PostgreSQL cluster with one database set up for ``system``, until ``close()``."""

    def __init__(self, system: System) -> None:
        with contextlib.ExitStack() as starting:
            self.server = starting.enter_context(PostgresServer())
            self.dsn = self.server.create_database("bench")
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(OBJECTS_SQL)
                if system.kind == "outbox":
                    outbox.init_schema(conn)
                else:
                    conn.execute(CONSUMER_SCHEMA_SQL)
            self._running = starting.pop_all()

    @property
    def pid(self) -> int:
        """The postmaster: its backends are its children."""
        assert self.server.pid is not None
        return self.server.pid

    def close(self) -> None:
        self._running.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
