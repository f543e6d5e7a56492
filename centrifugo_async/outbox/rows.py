"""``OutboxRow``: one message as the outbox table stores it, encoded without I/O.

A row is made exactly like a ``Publisher`` message (the same ``Message``
validation, the same envelope and routing, from the publisher's planning) at
``publish`` time, inside the caller's transaction: bad input fails there, while
the caller can still roll back. The envelope keeps the placeholder ``seq``; the
forwarder splits it around that placeholder and the enqueue script assigns the
real number, so sequence numbers are given out exactly as for direct publishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .._clock import now_ms
from ..exceptions import InvalidMessage
from ..publisher._plan import draft_envelope, encode_draft
from ..publisher.message import Message

__all__ = ["OutboxRow", "encode_rows"]


@attrs.frozen
class OutboxRow:
    """The columns of one outbox row (``id`` and ``created_at`` are the database's)."""

    shard: int
    """``shard_for(key, shards)``: the Redis shard and the forwarders' lane."""
    shards: int
    """The shard count the row was routed with."""
    envelope: str
    """Envelope v1 JSON with the placeholder ``"seq":1``."""

    def params(self) -> tuple[int, int, str]:
        """Parameters of ``OutboxTable.insert_one``."""
        return (self.shard, self.shards, self.envelope)

    def named_params(self) -> dict[str, Any]:
        """Parameters of ``OutboxTable.insert_named``."""
        return {"shard": self.shard, "shards": self.shards, "envelope": self.envelope}


def encode_rows(
    messages: Iterable[Message], *, shards: int, max_payload_bytes: int
) -> list[OutboxRow]:
    """Validate and encode every message; a bad one fails the whole batch before any SQL."""
    created_ms = now_ms()
    rows = []
    for message in messages:
        if not isinstance(message, Message):
            raise InvalidMessage(f"publish_many expects Message objects, got {message!r}")
        draft = draft_envelope(message, shards, created_ms)
        encoded = encode_draft(draft, max_payload_bytes)
        rows.append(OutboxRow(draft.shard, shards, encoded.decode("utf-8")))
    return rows
