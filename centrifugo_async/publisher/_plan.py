"""The I/O-free half of publishing, shared by ``Publisher`` and ``AsyncPublisher``.

A batch of messages becomes an ``EnqueuePlan``: one ``ENQUEUE`` script call per
shard group (chunked), with each envelope pre-encoded around its ``seq`` value so
the script only splices in the number it assigns. The twins run the calls in a
single pipeline and hand the replies back to ``EnqueuePlan.envelopes``.

The steps are also offered one by one (``draft_envelope``, ``encode_draft``,
``split_at_seq``) for the transactional outbox, which validates and encodes at
``publish`` time like the twins, stores the encoding in a table, and splits it
around ``seq`` only when its forwarder enqueues it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import msgspec
import redis.exceptions

from .._clock import now_ms
from ..exceptions import (
    InvalidMessage,
    PayloadTooLarge,
    QueueUnavailable,
    TopologyMismatch,
)
from ..protocol.envelope import ENVELOPE_VERSION, Envelope
from ..protocol.keys import Keyspace, ShardKeys
from ..protocol.routing import shard_for
from ..protocol.scripts import TOPOLOGY_ERROR
from .message import Message

ENQUEUE_CHUNK = 1000
"""Most envelopes per ``ENQUEUE`` call: bigger groups are split into several calls."""
_SEQ_PLACEHOLDER = 1
_SEQ_MARKER = b'"seq":1,'
_encoder = msgspec.json.Encoder()


@attrs.frozen
class ScriptCall:
    """One ``ENQUEUE`` call: the messages of one shard, in call order."""

    keys: ShardKeys
    args: list[bytes | str]
    drafts: list[Envelope[Any]]

    @property
    def keys_and_args(self) -> tuple[bytes | str, ...]:
        """``EVALSHA`` arguments after the sha and the key count (3)."""
        k = self.keys
        return (k.state, k.queue, k.bell, *self.args)


@attrs.frozen
class EnqueuePlan:
    calls: list[ScriptCall]

    def envelopes(self, replies: Sequence[object]) -> list[Envelope[Any]]:
        """Envelopes with their assigned ``seq``, in the order the calls were planned.

        Raises the typed error for the first failed call.
        """
        for reply in replies:
            if isinstance(reply, BaseException):
                raise translate_redis_error(reply)
        return [
            msgspec.structs.replace(draft, seq=int(first) + offset)  # type: ignore[call-overload]
            for call, first in zip(self.calls, replies, strict=True)
            for offset, draft in enumerate(call.drafts)
        ]


def plan(
    messages: Iterable[Message],
    keyspace: Keyspace,
    max_payload_bytes: int,
    *,
    created_ms: int | None = None,
    traceparent: str | None = None,
) -> EnqueuePlan:
    """Validate and encode every message, then group them by shard.

    Everything that can fail on bad input fails here, before any I/O. The
    envelopes' ``ts`` is now, unless ``created_ms`` gives it (a dead-letter
    replay keeps the original, so that ``ttl_ms`` still bounds lateness).
    ``traceparent`` (the publishing span's trace context) goes into every envelope.
    """
    created_ms = now_ms() if created_ms is None else created_ms
    groups: dict[int, ScriptCall] = {}
    calls: list[ScriptCall] = []
    for message in messages:
        if not isinstance(message, Message):
            raise InvalidMessage(f"publish_many expects Message objects, got {message!r}")
        draft = draft_envelope(message, keyspace.shards, created_ms, traceparent)
        head, tail = split_at_seq(encode_draft(draft, max_payload_bytes))
        call = groups.get(draft.shard)
        if call is None or len(call.drafts) >= ENQUEUE_CHUNK:
            call = ScriptCall(keyspace.shard(draft.shard), [str(keyspace.shards)], [])
            groups[draft.shard] = call
            calls.append(call)
        call.args.extend((head, tail))
        call.drafts.append(draft)
    return EnqueuePlan(calls)


def draft_envelope(
    message: Message, shards: int, created_ms: int, traceparent: str | None = None
) -> Envelope[Any]:
    """The envelope of ``message`` routed over ``shards``, with a placeholder ``seq``."""
    return Envelope(
        v=ENVELOPE_VERSION,
        channel=message.channel,
        key=message.key,
        version=message.version,
        seq=_SEQ_PLACEHOLDER,
        shard=shard_for(message.key, shards),
        ts=created_ms,
        data=message.data,
        tags=dict(message.tags) if message.tags is not None else None,
        idempotency_key=message.idempotency_key,
        ttl_ms=message.ttl_ms,
        deleted=message.deleted,
        traceparent=traceparent,
    )


def encode_draft(draft: Envelope[Any], max_payload_bytes: int) -> bytes:
    """The canonical bytes of ``draft``, refused if ``data`` is not JSON or it is too large.

    The limit leaves room for the longest ``seq`` the enqueue script may splice in.
    """
    try:
        encoded = _encoder.encode(draft)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidMessage(f"`data` is not JSON-serialisable: {exc}") from None
    # The spliced seq may be up to 15 digits longer than the placeholder.
    if len(encoded) + 15 > max_payload_bytes:
        raise PayloadTooLarge(
            f"envelope for key {draft.key!r} is {len(encoded)} bytes, over the "
            f"limit of {max_payload_bytes} bytes (max_payload_bytes)"
        )
    return encoded


def split_at_seq(encoded: bytes) -> tuple[bytes, bytes]:
    """Cut an encoded draft around its ``seq`` value: the two halves ``ENQUEUE`` joins.

    ``seq`` is encoded after ``v``, ``channel``, ``key`` and ``version``; string
    values escape their quotes, so the first ``"seq":1,`` is always the field.
    """
    head, marker, tail = encoded.partition(_SEQ_MARKER)
    if not marker:
        raise InvalidMessage("not an encoded draft envelope: its placeholder seq is missing")
    return head + b'"seq":', b"," + tail


def _draft(message: Message, shards: int, now_ms: int) -> Envelope[Any]:
    return draft_envelope(message, shards, now_ms)


def _split_at_seq(draft: Envelope[Any], max_payload_bytes: int) -> tuple[bytes, bytes]:
    """Encode ``draft`` and cut it around the ``seq`` value."""
    return split_at_seq(encode_draft(draft, max_payload_bytes))


def translate_redis_error(exc: BaseException) -> Exception:
    """Map a redis-py error to the library's typed errors."""
    if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(TOPOLOGY_ERROR):
        return TopologyMismatch(str(exc).removeprefix(TOPOLOGY_ERROR).strip())
    if isinstance(exc, redis.exceptions.RedisError):
        return QueueUnavailable(f"Redis is unavailable or failed the command: {exc}")
    if isinstance(exc, Exception):
        return exc
    return QueueUnavailable(repr(exc))


def is_noscript(reply: object) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)
