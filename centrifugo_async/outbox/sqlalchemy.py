"""The outbox for SQLAlchemy: a Core ``Connection`` or an ORM ``Session`` (and their async twins).

The same rows as ``Outbox.publish``, inserted with the session's own connection
and therefore inside its transaction: they commit with ``session.commit()`` (or
the ``with engine.begin()`` block) and disappear on rollback. Any PostgreSQL
driver works; the statement is plain SQL with named parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..publisher.message import Message
from .rows import OutboxRow
from .writer import DEFAULT_OUTBOX, Outbox

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["publish", "publish_async", "publish_many", "publish_many_async"]


def _statement(outbox: Outbox) -> Any:
    from sqlalchemy import text

    return text(outbox.table.insert_named)


def _one(
    outbox: Outbox,
    channel: str,
    data: Any,
    key: str,
    version: int,
    tags: Mapping[str, str] | None,
    idempotency_key: str | None,
    ttl_ms: int | None,
) -> list[OutboxRow]:
    return outbox.rows([Message(channel, data, key, version, tags, idempotency_key, ttl_ms)])


def publish(
    bind: Connection | Session,
    channel: str,
    data: Any,
    *,
    key: str,
    version: int,
    tags: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    ttl_ms: int | None = None,
    outbox: Outbox = DEFAULT_OUTBOX,
) -> OutboxRow:
    """Insert one message in ``bind``'s transaction (a Core connection or an ORM session)."""
    rows = _one(outbox, channel, data, key, version, tags, idempotency_key, ttl_ms)
    bind.execute(_statement(outbox), [rows[0].named_params()])
    return rows[0]


def publish_many(
    bind: Connection | Session, messages: Iterable[Message], *, outbox: Outbox = DEFAULT_OUTBOX
) -> list[OutboxRow]:
    """Insert many messages in ``bind``'s transaction, in order."""
    rows = outbox.rows(messages)
    if rows:
        bind.execute(_statement(outbox), [row.named_params() for row in rows])
    return rows


async def publish_async(
    bind: AsyncConnection | AsyncSession,
    channel: str,
    data: Any,
    *,
    key: str,
    version: int,
    tags: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    ttl_ms: int | None = None,
    outbox: Outbox = DEFAULT_OUTBOX,
) -> OutboxRow:
    """The asyncio twin of ``publish`` (``AsyncConnection`` or ``AsyncSession``)."""
    rows = _one(outbox, channel, data, key, version, tags, idempotency_key, ttl_ms)
    await bind.execute(_statement(outbox), [rows[0].named_params()])
    return rows[0]


async def publish_many_async(
    bind: AsyncConnection | AsyncSession,
    messages: Iterable[Message],
    *,
    outbox: Outbox = DEFAULT_OUTBOX,
) -> list[OutboxRow]:
    """The asyncio twin of ``publish_many``."""
    rows = outbox.rows(messages)
    if rows:
        await bind.execute(_statement(outbox), [row.named_params() for row in rows])
    return rows
