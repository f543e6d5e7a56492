"""Publishing through the outbox with psycopg 3: insert the rows in the caller's transaction.

``Outbox`` holds the settings (table, shard count, payload limit);
``publish`` / ``publish_many`` take a ``psycopg.Connection`` and their
``*_async`` twins an ``AsyncConnection``. Nothing is committed here: the rows
become visible to the forwarder exactly when the caller's transaction commits,
together with the change they announce, and vanish with it on rollback.

Per key, messages reach subscribers in the order of the rows' ids, which is the
commit order only if the transactions that write one key are serialised: update
(or ``SELECT ... FOR UPDATE``) the object's row first, then publish, in the same
transaction (see docs/outbox.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import NotInTransaction
from ..protocol.routing import MAX_SHARDS
from ..publisher import DEFAULT_MAX_PAYLOAD_BYTES
from ..publisher.message import Message
from .rows import OutboxRow, encode_rows
from .table import DEFAULT_TABLE, OutboxTable

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_OUTBOX",
    "Outbox",
    "publish",
    "publish_async",
    "publish_many",
    "publish_many_async",
]


def _to_table(value: OutboxTable | str) -> OutboxTable:
    return value if isinstance(value, OutboxTable) else OutboxTable(value)


def _check_shards(_: object, __: attrs.Attribute[int], shards: int) -> None:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"invalid shard count {shards!r}: it must be an integer 1..{MAX_SHARDS}")


def _check_payload_limit(_: object, __: attrs.Attribute[int], limit: int) -> None:
    if limit < 256:
        raise ValueError(f"max_payload_bytes must be >= 256, got {limit}")


def _require_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Refuse an autocommit connection outside a transaction block (the row would commit alone).

    A non-autocommit connection is always fine: psycopg begins a transaction with
    the insert if none is open, and the caller's commit ends it.
    """
    from psycopg.pq import TransactionStatus

    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        raise NotInTransaction(
            "outbox publish needs a transaction: this connection is in autocommit mode "
            "outside `with conn.transaction()`, so the row would commit on its own, apart "
            "from the change it announces"
        )


@attrs.frozen
class Outbox:
    """Where and how messages are written: the table, the shard count, the payload limit.

    ``shards`` must be the count the relay's Redis records (as for ``Publisher``);
    the forwarder routes a row written with another count again, so nothing is
    misrouted, but per-key order across such a change is not kept.
    """

    table: OutboxTable = attrs.field(default=OutboxTable(DEFAULT_TABLE), converter=_to_table)
    shards: int = attrs.field(default=16, validator=_check_shards)
    max_payload_bytes: int = attrs.field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, validator=_check_payload_limit
    )

    def rows(self, messages: Iterable[Message]) -> list[OutboxRow]:
        """The rows for ``messages``, validated and encoded (no I/O): for any other driver."""
        return encode_rows(messages, shards=self.shards, max_payload_bytes=self.max_payload_bytes)

    def _one(
        self,
        channel: str,
        data: Any,
        key: str,
        version: int,
        tags: Mapping[str, str] | None,
        idempotency_key: str | None,
        ttl_ms: int | None,
    ) -> OutboxRow:
        message = Message(channel, data, key, version, tags, idempotency_key, ttl_ms)
        return self.rows((message,))[0]

    def _many_params(self, rows: list[OutboxRow]) -> tuple[int, list[int], list[str]]:
        return (self.shards, [r.shard for r in rows], [r.envelope for r in rows])

    def publish(
        self,
        conn: psycopg.Connection[Any],
        channel: str,
        data: Any,
        *,
        key: str,
        version: int,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
    ) -> OutboxRow:
        """Insert one message for object ``key`` at ``version`` in ``conn``'s transaction."""
        row = self._one(channel, data, key, version, tags, idempotency_key, ttl_ms)
        _require_transaction(conn)
        conn.execute(self.table.insert_one, row.params())
        return row

    def publish_many(
        self, conn: psycopg.Connection[Any], messages: Iterable[Message]
    ) -> list[OutboxRow]:
        """Insert many messages in one statement; per key, their order is kept."""
        rows = self.rows(messages)
        if rows:
            _require_transaction(conn)
            conn.execute(self.table.insert_many, self._many_params(rows))
        return rows

    async def publish_async(
        self,
        conn: psycopg.AsyncConnection[Any],
        channel: str,
        data: Any,
        *,
        key: str,
        version: int,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
    ) -> OutboxRow:
        """The asyncio twin of ``publish``."""
        row = self._one(channel, data, key, version, tags, idempotency_key, ttl_ms)
        _require_transaction(conn)
        await conn.execute(self.table.insert_one, row.params())
        return row

    async def publish_many_async(
        self, conn: psycopg.AsyncConnection[Any], messages: Iterable[Message]
    ) -> list[OutboxRow]:
        """The asyncio twin of ``publish_many``."""
        rows = self.rows(messages)
        if rows:
            _require_transaction(conn)
            await conn.execute(self.table.insert_many, self._many_params(rows))
        return rows


DEFAULT_OUTBOX = Outbox()
"""Table ``centrifugo_outbox``, 16 shards: what the module-level functions use."""


def publish(
    conn: psycopg.Connection[Any],
    channel: str,
    data: Any,
    *,
    key: str,
    version: int,
    tags: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    ttl_ms: int | None = None,
) -> OutboxRow:
    """``DEFAULT_OUTBOX.publish``: insert one message in ``conn``'s current transaction."""
    return DEFAULT_OUTBOX.publish(
        conn,
        channel,
        data,
        key=key,
        version=version,
        tags=tags,
        idempotency_key=idempotency_key,
        ttl_ms=ttl_ms,
    )


def publish_many(conn: psycopg.Connection[Any], messages: Iterable[Message]) -> list[OutboxRow]:
    """``DEFAULT_OUTBOX.publish_many``."""
    return DEFAULT_OUTBOX.publish_many(conn, messages)


async def publish_async(
    conn: psycopg.AsyncConnection[Any],
    channel: str,
    data: Any,
    *,
    key: str,
    version: int,
    tags: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    ttl_ms: int | None = None,
) -> OutboxRow:
    """``DEFAULT_OUTBOX.publish_async``."""
    return await DEFAULT_OUTBOX.publish_async(
        conn,
        channel,
        data,
        key=key,
        version=version,
        tags=tags,
        idempotency_key=idempotency_key,
        ttl_ms=ttl_ms,
    )


async def publish_many_async(
    conn: psycopg.AsyncConnection[Any], messages: Iterable[Message]
) -> list[OutboxRow]:
    """``DEFAULT_OUTBOX.publish_many_async``."""
    return await DEFAULT_OUTBOX.publish_many_async(conn, messages)
