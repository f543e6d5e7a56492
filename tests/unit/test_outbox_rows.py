"""The outbox without I/O: rows as the publisher encodes them, the SQL names, the batch plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from centrifugo_async import InvalidMessage, Keyspace, Message, PayloadTooLarge, shard_for
from centrifugo_async.outbox import Outbox, OutboxTable, encode_rows, schema_sql
from centrifugo_async.outbox.batch import PendingRow, plan_batch
from centrifugo_async.protocol import decode_envelope
from centrifugo_async.protocol.deadletter import decode_dead_letter
from centrifugo_async.publisher._plan import ENQUEUE_CHUNK, plan


def make(**overrides: Any) -> Message:
    fields: dict[str, Any] = dict(
        channel="obj:orders", data={"s": "paid"}, key="order:1", version=3
    )
    fields.update(overrides)
    return Message(**fields)


def splice(head: bytes | str, seq: int, tail: bytes | str) -> bytes:
    assert isinstance(head, bytes) and isinstance(tail, bytes)
    return head + str(seq).encode() + tail


def pending(rows: list[Any], *, first_id: int = 1) -> list[PendingRow]:
    return [
        PendingRow(first_id + n, row.shard, row.shards, row.envelope.encode(), 0)
        for n, row in enumerate(rows)
    ]


# --- rows ---------------------------------------------------------------------------


def test_a_row_is_the_publishers_envelope_with_its_placeholder_seq() -> None:
    message = make(tags={"t": "x"}, idempotency_key="idem", ttl_ms=5000)
    (row,) = encode_rows([message], shards=8, max_payload_bytes=10_000)
    (call,) = plan([message], Keyspace(shards=8), 10_000).calls
    direct = decode_envelope(splice(call.args[1], 7, call.args[2]))
    via_outbox = decode_envelope(row.envelope)
    assert row.shard == shard_for("order:1", 8) == direct.shard
    assert row.shards == 8
    assert via_outbox.seq == 1
    # The same envelope but for seq and the creation time.
    assert msgspec.structs.replace(via_outbox, seq=7, ts=direct.ts) == direct


def test_invalid_messages_are_refused_before_any_sql() -> None:
    with pytest.raises(InvalidMessage, match="version"):
        Outbox().rows([make(version=-1)])
    with pytest.raises(InvalidMessage, match="JSON"):
        Outbox().rows([make(data={"when": object()})])
    with pytest.raises(PayloadTooLarge):
        Outbox(max_payload_bytes=300).rows([make(data="x" * 300)])
    with pytest.raises(InvalidMessage, match="Message objects"):
        Outbox().rows([make(), "not a message"])  # type: ignore[list-item]


PRODUCER_REJECTS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "envelopes.json").read_text(encoding="utf-8")
)["producer_rejects"]


@pytest.mark.parametrize("case", PRODUCER_REJECTS, ids=lambda c: c["name"])
def test_what_no_subscriber_could_decode_is_refused_inside_the_transaction(
    case: dict[str, Any],
) -> None:
    """The JSON profile applies to rows as to direct publishes: the same shared step."""
    with pytest.raises(InvalidMessage, match=r"nested|lone surrogate|IEEE 754 double|NaN"):
        Outbox().rows([Message(**json.loads(case["message"]))])


def test_outbox_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="shard count"):
        Outbox(shards=0)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        Outbox(max_payload_bytes=10)
    assert Outbox(table="app.outbox").table == OutboxTable("app.outbox")


# --- names and SQL ------------------------------------------------------------------


def test_names_are_quoted_and_derived_from_the_table() -> None:
    plain = OutboxTable()
    assert plain.table == '"centrifugo_outbox"'
    assert plain.version_table == '"centrifugo_outbox_schema_version"'
    weird = OutboxTable('app.my "box"')
    assert weird.table == '"app"."my ""box"""'
    assert weird.index == '"my ""box""_shard_id"'
    assert weird.channel == 'app.my "box"'
    assert weird.lock_class != plain.lock_class
    assert 0 <= weird.lock_class < 2**31


@pytest.mark.parametrize("name", ["", "a.b.c", ".x", "x ", "y" * 60])
def test_bad_table_names_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(ValueError, match="outbox table name"):
        OutboxTable(name)


def test_the_schema_script_is_idempotent_and_versioned() -> None:
    sql = schema_sql(OutboxTable("app.box"))
    assert "schema version 1" in sql
    assert sql.count("IF NOT EXISTS") >= 4
    assert '"app"."box"' in sql
    assert "ON CONFLICT (version) DO NOTHING" in sql


# --- the forwarder's batch plan -----------------------------------------------------


def test_rows_become_one_enqueue_call_per_shard_in_row_order() -> None:
    messages = [make(key=f"k{i % 5}", version=i) for i in range(40)]
    rows = Outbox(shards=4).rows(messages)
    ordered = sorted(pending(rows), key=lambda r: (r.lane, r.id))
    batch = plan_batch(ordered, Keyspace(shards=4), "fwd")
    assert batch.enqueued == 40 and batch.rerouted == 0 and not batch.dead_letters
    assert batch.row_ids == [r.id for r in ordered]
    seen: dict[str, list[int]] = {}
    for call in batch.calls:
        assert call.args[0] == "4"
        for head, tail in zip(call.args[1::2], call.args[2::2], strict=True):
            envelope = decode_envelope(splice(head, 9, tail))
            assert envelope.shard == call.keys.shard == shard_for(envelope.key, 4)
            seen.setdefault(envelope.key, []).append(envelope.version)
    assert all(v == sorted(v) for v in seen.values())
    assert sum(len(v) for v in seen.values()) == 40


def test_big_lanes_are_split_into_chunks() -> None:
    rows = Outbox(shards=1).rows([make(version=i) for i in range(ENQUEUE_CHUNK + 5)])
    batch = plan_batch(pending(rows), Keyspace(shards=1), "fwd")
    assert [call.count for call in batch.calls] == [ENQUEUE_CHUNK, 5]


def test_rows_written_with_another_shard_count_are_routed_again() -> None:
    rows = Outbox(shards=16).rows([make(key=f"k{i}", version=i) for i in range(30)])
    batch = plan_batch(pending(rows), Keyspace(shards=4), "fwd")
    assert batch.rerouted == 30
    for call in batch.calls:
        for head, tail in zip(call.args[1::2], call.args[2::2], strict=True):
            envelope = decode_envelope(splice(head, 1, tail))
            assert envelope.shard == call.keys.shard == shard_for(envelope.key, 4)


def test_an_unreadable_row_becomes_a_dead_letter_and_does_not_block_its_lane() -> None:
    good = Outbox(shards=4).rows([make(key="k", version=1)])[0]
    rows = [
        PendingRow(1, good.shard, 4, b'{"not": "an envelope"}', 0),
        PendingRow(2, good.shard, 4, good.envelope.encode(), 0),
    ]
    batch = plan_batch(rows, Keyspace(shards=4), "fwd-1")
    assert batch.row_ids == [1, 2]
    assert batch.enqueued == 1
    ((keys, raw),) = batch.dead_letters
    letter = decode_dead_letter(raw)
    assert keys.shard == good.shard == letter.shard
    assert letter.reason == "invalid_envelope" and letter.relay == "fwd-1"
    assert "outbox row 1" in letter.error
    assert letter.original == b'{"not": "an envelope"}'


def test_a_row_breaking_the_json_profile_is_dead_lettered_with_its_rule_when_rerouted() -> None:
    good = Outbox(shards=16).rows([make(key="k", version=1)])[0]
    deep = good.envelope.replace('"data":{"s":"paid"}', '"data":' + "[" * 101 + "]" * 101)
    rows = [PendingRow(1, good.shard, 16, deep.encode(), 0)]
    batch = plan_batch(rows, Keyspace(shards=4), "fwd-1")
    assert batch.enqueued == 0 and batch.row_ids == [1]
    ((_, raw),) = batch.dead_letters
    letter = decode_dead_letter(raw)
    assert letter.reason == "too_deep"
    assert letter.original == deep.encode()
