"""The I/O-free half of publishing, shared by ``Publisher`` and ``AsyncPublisher``.

A batch of messages becomes an ``EnqueuePlan``: one ``ENQUEUE`` script call per
shard group (chunked), with each envelope pre-encoded around its ``seq`` value so
the script only splices in the number it assigns. The twins run the calls in a
single pipeline through an ``EnqueueRun``, which keeps track of what Redis
answered, decides what to send again, and turns the answers into envelopes or
the typed error (``PartialPublish`` when part of a batch went in).

The steps are also offered one by one (``draft_envelope``, ``encode_draft``,
``split_at_seq``) for the transactional outbox, which validates and encodes at
``publish`` time like the twins (the same JSON profile, ``protocol.ijson``),
stores the encoding in a table, and splits it around ``seq`` only when its
forwarder enqueues it.
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
    PartialPublish,
    PayloadTooLarge,
    QueueUnavailable,
    TopologyMismatch,
)
from ..protocol import ijson
from ..protocol.envelope import ENVELOPE_VERSION, Envelope
from ..protocol.keys import Keyspace, ShardKeys
from ..protocol.routing import shard_for
from ..protocol.scripts import ENQUEUE, TOPOLOGY_ERROR
from .message import Message

ENQUEUE_CHUNK = 1000
"""Most envelopes per ``ENQUEUE`` call: bigger groups are split into several calls."""
_SEQ_PLACEHOLDER = 1
_SEQ_MARKER = b'"seq":1,'


@attrs.frozen
class ScriptCall:
    """One ``ENQUEUE`` call: the messages of one shard, in call order."""

    keys: ShardKeys
    args: list[bytes | str]
    drafts: list[Envelope[Any]]
    positions: list[int]
    """Where each draft's message stands in the caller's batch."""

    @property
    def command(self) -> tuple[bytes | str | int, ...]:
        """The ``EVALSHA`` command: sha, key count (3), keys, then the arguments."""
        k = self.keys
        return ("EVALSHA", ENQUEUE.sha, 3, k.state, k.queue, k.bell, *self.args)

    def envelopes(self, first_seq: object) -> list[Envelope[Any]]:
        first = int(first_seq)  # type: ignore[call-overload]
        return [
            msgspec.structs.replace(draft, seq=first + offset)
            for offset, draft in enumerate(self.drafts)
        ]


@attrs.frozen
class EnqueuePlan:
    calls: list[ScriptCall]
    messages: list[Message]


@attrs.define
class EnqueueRun:
    """One execution of a plan: which calls Redis answered, and how.

    The twins send ``commands()`` in a pipeline and hand the replies to
    ``record``; calls that found the script missing (``NOSCRIPT``, after a
    ``SCRIPT FLUSH`` or on a cluster node that never saw it) are sent again once
    the script is loaded, and only those: the others already ran.
    """

    plan: EnqueuePlan
    replies: dict[int, object] = attrs.Factory(dict)
    """Call index -> first ``seq`` assigned, or the exception Redis answered with."""
    lost: dict[int, BaseException] = attrs.Factory(dict)
    """Call index -> the error that cut the connection before Redis answered it."""
    rounds: int = 0

    def pending(self) -> list[int]:
        return [
            i
            for i in range(len(self.plan.calls))
            if i not in self.lost and (i not in self.replies or is_noscript(self.replies[i]))
        ]

    def commands(self) -> list[tuple[bytes | str | int, ...]]:
        return [self.plan.calls[i].command for i in self.pending()]

    def record(self, replies: Sequence[object]) -> bool:
        """Store a pipeline's replies; True when the pending calls should be sent again."""
        self.rounds += 1
        self.replies.update(zip(self.pending(), replies, strict=True))
        return self.rounds < 2 and bool(self.pending())

    def connection_lost(self, exc: BaseException) -> None:
        """The pipeline failed as a whole: the pending calls may or may not have run."""
        self.lost.update(dict.fromkeys(self.pending(), exc))

    def script_refused(self, exc: BaseException) -> None:
        """Loading the script failed: the pending calls did not run."""
        self.replies.update(dict.fromkeys(self.pending(), exc))

    def result(self) -> list[Envelope[Any]]:
        """Envelopes with their assigned ``seq``, in the order the calls were planned.

        Raises the typed error of the first failed call when nothing was
        enqueued, and ``PartialPublish`` when part of the batch was.
        """
        calls = self.plan.calls
        failed = {
            i: _failure(reply)
            for i, reply in self.replies.items()
            if isinstance(reply, BaseException) and i not in self.lost
        }
        done = [i for i in range(len(calls)) if i not in failed and i not in self.lost]
        if len(done) == len(calls):
            return [e for i in done for e in calls[i].envelopes(self.replies[i])]
        causes = [failed[i] for i in sorted(failed)]
        causes += [translate_redis_error(self.lost[i]) for i in sorted(self.lost)]
        if not done:
            raise causes[0]
        enqueued = [e for i in done for e in calls[i].envelopes(self.replies[i])]
        refused, unknown = self._messages(failed), self._messages(self.lost)
        total = len(self.plan.messages)
        parts = []
        if refused:
            parts.append(f"{len(refused)} refused")
        if unknown:
            parts.append(f"{len(unknown)} with an unknown outcome")
        detail = ", ".join(parts)
        raise PartialPublish(
            f"Redis enqueued {len(enqueued)} of {total} messages ({detail}): {causes[0]}",
            enqueued=enqueued,
            not_enqueued=refused,
            unknown=unknown,
        ) from causes[0]

    def _messages(self, calls: Iterable[int]) -> list[Message]:
        positions = sorted(p for i in calls for p in self.plan.calls[i].positions)
        return [self.plan.messages[p] for p in positions]


def _failure(reply: BaseException) -> Exception:
    if is_noscript(reply):
        return QueueUnavailable("Redis keeps forgetting the enqueue script (SCRIPT FLUSH?)")
    return translate_redis_error(reply)


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
    batch = list(messages)
    for position, message in enumerate(batch):
        if not isinstance(message, Message):
            raise InvalidMessage(f"publish_many expects Message objects, got {message!r}")
        draft = draft_envelope(message, keyspace.shards, created_ms, traceparent)
        head, tail = split_at_seq(encode_draft(draft, max_payload_bytes))
        call = groups.get(draft.shard)
        if call is None or len(call.drafts) >= ENQUEUE_CHUNK:
            call = ScriptCall(keyspace.shard(draft.shard), [str(keyspace.shards)], [], [])
            groups[draft.shard] = call
            calls.append(call)
        call.args.extend((head, tail))
        call.drafts.append(draft)
        call.positions.append(position)
    return EnqueuePlan(calls, batch)


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
        encoded = ijson.encode(draft)
    except ijson.Unencodable as exc:
        raise InvalidMessage(
            f"`data` for key {draft.key!r} is not JSON every subscriber can decode: {exc.violation}"
        ) from None
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
