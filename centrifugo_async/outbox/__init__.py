"""The transactional outbox: no committed change is lost between PostgreSQL and Redis.

``publish(conn, ...)`` inserts the message as a row of the outbox table inside
the caller's transaction, so it exists if and only if the change it announces
commits. The forwarder (``centrifugo-async outbox forward``,
``centrifugo_async.outbox.forwarder.forward``) moves committed rows into the
shard lists with the same enqueue script as the publisher, then deletes them::

    table.py        the table's names and every SQL statement
    schema.py       schema version 1: create it, print it, check it
    rows.py         a message as a row (the publisher's validation and envelope)
    writer.py       Outbox, publish / publish_many (psycopg 3, sync and asyncio)
    sqlalchemy.py   the same for a SQLAlchemy Connection or Session
    batch.py        rows -> enqueue calls, without I/O
    forwarder.py    the forwarder: lanes under advisory locks, LISTEN/NOTIFY, batches
    settings.py metrics.py health.py stats.py   its settings, metrics, /health, backlog

psycopg is needed at run time only by the psycopg writer functions and the
forwarder (``pip install 'centrifugo-async[outbox]'``).
"""

from .rows import OutboxRow, encode_rows
from .schema import SCHEMA_VERSION, check_schema, init_schema, schema_sql
from .table import DEFAULT_TABLE, OutboxTable
from .writer import (
    DEFAULT_OUTBOX,
    Outbox,
    publish,
    publish_async,
    publish_many,
    publish_many_async,
)

__all__ = [
    "DEFAULT_OUTBOX",
    "DEFAULT_TABLE",
    "SCHEMA_VERSION",
    "Outbox",
    "OutboxRow",
    "OutboxTable",
    "check_schema",
    "encode_rows",
    "init_schema",
    "publish",
    "publish_async",
    "publish_many",
    "publish_many_async",
    "schema_sql",
]
