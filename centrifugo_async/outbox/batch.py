"""Outbox rows -> ``ENQUEUE`` script calls, without I/O.

The forwarder reads a batch of rows (per lane, in id order) and turns it into
one enqueue call per Redis shard, keeping the rows' order inside each call, so
the script assigns ``seq`` exactly as for a direct publish and a key's messages
keep the order of their rows. A row routed with the shard count Redis records
(the normal case) is only cut around its placeholder ``seq``; a row routed with
another count is decoded and routed again, so it still lands on its key's
shard. A row whose envelope cannot be read becomes a dead letter in the
shard's dead-letter list (``centrifugo-async dlq list``), with the JSON
profile's rule as its reason when it breaks one, rather than blocking its lane
forever.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import msgspec

from ..exceptions import CentrifugoAsyncError, EnvelopeDecodeError
from ..protocol.deadletter import DeadLetter, encode_dead_letter
from ..protocol.envelope import decode_envelope, encode_envelope
from ..protocol.keys import Keyspace, ShardKeys
from ..protocol.routing import shard_for
from ..publisher._plan import ENQUEUE_CHUNK, split_at_seq

__all__ = ["EnqueueCall", "ForwardBatch", "PendingRow", "plan_batch"]


@attrs.frozen
class PendingRow:
    """One committed outbox row, as the forwarder's batch query returns it."""

    id: int
    lane: int
    shards: int
    envelope: bytes
    created_ms: int


@attrs.frozen
class EnqueueCall:
    """One ``ENQUEUE`` call: ``shards`` then head/tail pairs, for one Redis shard."""

    keys: ShardKeys
    args: list[bytes | str]

    @property
    def count(self) -> int:
        return (len(self.args) - 1) // 2

    @property
    def keys_and_args(self) -> tuple[bytes | str, ...]:
        """``EVALSHA`` arguments after the sha and the key count (3)."""
        return (self.keys.state, self.keys.queue, self.keys.bell, *self.args)


@attrs.frozen
class ForwardBatch:
    """What one sweep sends to Redis, and which rows it may then delete."""

    calls: list[EnqueueCall]
    dead_letters: list[tuple[ShardKeys, bytes]]
    row_ids: list[int]
    rerouted: int
    """Rows routed again because their writer used another shard count."""

    @property
    def enqueued(self) -> int:
        return sum(call.count for call in self.calls)


def _reroute(envelope: bytes, shards: int) -> tuple[int, bytes]:
    """The key's shard under ``shards`` and the envelope re-encoded with it."""
    decoded = decode_envelope(envelope, raw_data=True)
    shard = shard_for(decoded.key, shards)
    return shard, encode_envelope(msgspec.structs.replace(decoded, shard=shard))


def plan_batch(rows: Iterable[PendingRow], keyspace: Keyspace, forwarder: str) -> ForwardBatch:
    """Group ``rows`` (in the order given) into enqueue calls for ``keyspace``."""
    open_calls: dict[int, EnqueueCall] = {}
    calls: list[EnqueueCall] = []
    dead_letters: list[tuple[ShardKeys, bytes]] = []
    row_ids: list[int] = []
    rerouted = 0
    for row in rows:
        row_ids.append(row.id)
        try:
            if row.shards == keyspace.shards and row.lane < keyspace.shards:
                shard, encoded = row.lane, row.envelope
            else:
                shard, encoded = _reroute(row.envelope, keyspace.shards)
                rerouted += 1
            head, tail = split_at_seq(encoded)
        except CentrifugoAsyncError as exc:
            letter = DeadLetter.for_payload(
                row.envelope,
                shard=row.lane % keyspace.shards,
                reason=exc.reason if isinstance(exc, EnvelopeDecodeError) else "invalid_envelope",
                error=f"outbox row {row.id}: {exc}",
                relay=forwarder,
            )
            dead_letters.append((keyspace.shard(letter.shard), encode_dead_letter(letter)))
            continue
        call = open_calls.get(shard)
        if call is None or call.count >= ENQUEUE_CHUNK:
            call = EnqueueCall(keyspace.shard(shard), [str(keyspace.shards)])
            open_calls[shard] = call
            calls.append(call)
        call.args.extend((head, tail))
    return ForwardBatch(calls, dead_letters, row_ids, rerouted)
