"""The outbox schema (version 1): what ``centrifugo-async outbox init`` creates.

::

    centrifugo_outbox                 one row per message, deleted once forwarded
      id          bigint identity     insertion order; per key, the commit order
      shard       smallint            lane: shard_for(key, shards), the forwarders' unit of work
      shards      smallint            the shard count the writer routed with
      created_at  timestamptz         when the writing transaction began
      envelope    json                envelope v1 with a placeholder seq (1)
    index centrifugo_outbox_shard_id  (shard, id): each lane's rows in id order
    trigger centrifugo_outbox_notify  NOTIFY centrifugo_outbox once per inserting statement
    centrifugo_outbox_schema_version  the schema versions applied (1)

Applying it is idempotent: every object is created only if missing, under a
transaction-scoped advisory lock so concurrent ``init`` runs do not race. A
database whose recorded version is newer than this release knows is refused
rather than touched. Teams that run migrations themselves take the SQL from
``schema_sql`` (``outbox init --print``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import OutboxSchemaError
from .table import OutboxTable, quote_literal

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "check_schema", "check_schema_async", "init_schema", "schema_sql"]

SCHEMA_VERSION = 1
"""The schema version this release creates and reads."""


def schema_sql(table: OutboxTable | None = None) -> str:
    """The DDL of schema version 1 for ``table``, as one idempotent script."""
    t = table or OutboxTable()
    return f"""\
-- centrifugo-async outbox, schema version {SCHEMA_VERSION}
CREATE TABLE IF NOT EXISTS {t.table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shard smallint NOT NULL CHECK (shard >= 0),
    shards smallint NOT NULL CHECK (shards > shard),
    created_at timestamptz NOT NULL DEFAULT now(),
    envelope json NOT NULL
);
CREATE INDEX IF NOT EXISTS {t.index} ON {t.table} (shard, id);
CREATE OR REPLACE FUNCTION {t.notify_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$fn$;
DO $do$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = {quote_literal(t.table)}::regclass
          AND tgname = {quote_literal(t.trigger_name)}
    ) THEN
        CREATE TRIGGER {t.trigger} AFTER INSERT ON {t.table}
        FOR EACH STATEMENT EXECUTE FUNCTION {t.notify_function}({quote_literal(t.channel)});
    END IF;
END
$do$;
CREATE TABLE IF NOT EXISTS {t.version_table} (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO {t.version_table} (version) VALUES ({SCHEMA_VERSION}) ON CONFLICT (version) DO NOTHING;
"""


def _recorded_version(conn: psycopg.Connection[Any], table: OutboxTable) -> int | None:
    """The highest applied version, None when the version table does not exist."""
    exists = conn.execute("SELECT to_regclass(%s)", (table.version_table,)).fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute(f"SELECT max(version) FROM {table.version_table}").fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def _recorded_version_async(
    conn: psycopg.AsyncConnection[Any], table: OutboxTable
) -> int | None:
    exists = await (await conn.execute("SELECT to_regclass(%s)", (table.version_table,))).fetchone()
    if exists is None or exists[0] is None:
        return None
    cursor = await conn.execute(f"SELECT max(version) FROM {table.version_table}")
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _refuse_newer(version: int | None, table: OutboxTable) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise OutboxSchemaError(
            f"outbox table {table.name!r} has schema version {version}, newer than this "
            f"release knows ({SCHEMA_VERSION}): upgrade centrifugo-async"
        )


def init_schema(conn: psycopg.Connection[Any], table: OutboxTable | None = None) -> bool:
    """Create the outbox objects that are missing and commit; True if anything was created.

    Refuses (``OutboxSchemaError``) a database whose schema is newer than this release.
    """
    t = table or OutboxTable()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, -1)", (t.lock_class,))
        before = _recorded_version(conn, t)
        _refuse_newer(before, t)
        conn.execute(schema_sql(t).encode())
    return before is None


def check_schema(conn: psycopg.Connection[Any], table: OutboxTable | None = None) -> int:
    """The applied schema version; ``OutboxSchemaError`` if there is none or it is unknown."""
    t = table or OutboxTable()
    return _judge(_recorded_version(conn, t), t)


async def check_schema_async(
    conn: psycopg.AsyncConnection[Any], table: OutboxTable | None = None
) -> int:
    """The asyncio twin of ``check_schema`` (the forwarder checks before it starts)."""
    t = table or OutboxTable()
    return _judge(await _recorded_version_async(conn, t), t)


def _judge(version: int | None, t: OutboxTable) -> int:
    if version is None:
        raise OutboxSchemaError(
            f"no outbox table {t.name!r} in this database: create it with "
            "`centrifugo-async outbox init --dsn DSN` (or apply `outbox init --print`)"
        )
    _refuse_newer(version, t)
    return version
