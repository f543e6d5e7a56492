"""Bad input is refused with a clear error before anything is encoded or sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from centrifugo_async import InvalidMessage, Keyspace, Message, PayloadTooLarge
from centrifugo_async.publisher._plan import plan


def make(**overrides: Any) -> Message:
    fields: dict[str, Any] = dict(channel="obj:1", data={"a": 1}, key="user:1", version=1)
    fields.update(overrides)
    return Message(**fields)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"channel": ""}, "channel"),
        ({"channel": None}, "channel"),
        ({"key": ""}, "key"),
        ({"key": 5}, "key"),
        ({"version": -1}, "version"),
        ({"version": 2**53}, "version"),
        ({"version": 1.5}, "version"),
        ({"version": True}, "version"),
        ({"version": "3"}, "version"),
        ({"tags": {"a": 1}}, "tags"),
        ({"tags": ["a"]}, "tags"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"ttl_ms": 0}, "ttl_ms"),
        ({"ttl_ms": 1.5}, "ttl_ms"),
        ({"deleted": 1}, "deleted"),
        ({"deleted": True}, "data"),
    ],
)
def test_invalid_fields_are_named(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidMessage, match=f"`{named}`"):
        make(**overrides)


def test_boundary_versions_are_accepted() -> None:
    assert make(version=0).version == 0
    assert make(version=2**53 - 1).version == 2**53 - 1


def test_data_that_is_not_json_serialisable_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="`data` is not JSON-serialisable"):
        plan([make(data=object())], Keyspace(shards=4), 10_000)


def test_payload_over_the_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
        plan([make(data="x" * 1000)], Keyspace(shards=4), 1000)


def test_one_bad_message_refuses_the_whole_batch() -> None:
    good = [make(version=i) for i in range(3)]
    with pytest.raises(InvalidMessage):
        plan([*good, "not a message"], Keyspace(shards=4), 10_000)  # type: ignore[list-item]


def test_plan_keeps_call_order_per_shard_and_splits_around_seq() -> None:
    messages = [make(key=f"k{i % 5}", version=i) for i in range(20)]
    batch = plan(messages, Keyspace(shards=4), 10_000)
    for call in batch.calls:
        assert len({d.shard for d in call.drafts}) == 1
        heads, tails = call.args[1::2], call.args[2::2]
        for head, tail in zip(heads, tails, strict=True):
            assert isinstance(head, bytes) and head.endswith(b'"seq":')
            assert isinstance(tail, bytes) and tail.startswith(b',"shard":')
    versions_per_key: dict[str, list[int]] = {}
    for call in batch.calls:
        for draft in call.drafts:
            versions_per_key.setdefault(draft.key, []).append(draft.version)
    assert all(v == sorted(v) for v in versions_per_key.values())


PRODUCER_REJECTS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "envelopes.json").read_text(encoding="utf-8")
)["producer_rejects"]
NAMED_IN_THE_ERROR = {
    "too_deep": "nested",
    "invalid_unicode": "lone surrogate",
    "number_out_of_range": r"IEEE 754 double|NaN or infinity",
}


@pytest.mark.parametrize("case", PRODUCER_REJECTS, ids=lambda c: c["name"])
def test_what_no_subscriber_could_decode_is_refused_before_redis(case: dict[str, Any]) -> None:
    """The shared producer vectors: lenient JSON as Python's json reads it, then publish."""
    fields = json.loads(case["message"])
    with pytest.raises(InvalidMessage, match=NAMED_IN_THE_ERROR[case["reason"]]):
        plan([Message(**fields)], Keyspace(shards=4), 1_000_000)


def test_nan_is_refused_with_its_path_instead_of_becoming_null() -> None:
    with pytest.raises(InvalidMessage, match=r"`\$\.data\.readings\[2\]` is nan"):
        plan([make(data={"readings": [1.0, 2.0, float("nan")]})], Keyspace(shards=4), 10_000)


@pytest.mark.parametrize(
    "data",
    [None, {"a": None}, 1e308, -(2**64), "\uffff", [[[[]]]], float(2**53) + 2],
)
def test_values_inside_the_profile_are_accepted(data: Any) -> None:
    (call,) = plan([make(data=data)], Keyspace(shards=4), 10_000).calls
    assert call.drafts[0].data == data


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_data_at_the_depth_limit_is_accepted_and_one_more_level_is_not() -> None:
    plan([make(data=nested(100))], Keyspace(shards=4), 10_000)
    with pytest.raises(InvalidMessage, match="nested 101 levels deep"):
        plan([make(data=nested(101))], Keyspace(shards=4), 10_000)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (nested(5000), "nested far deeper than the limit of 100 levels"),
        (7 * 10**4999, "an integer of thousands of digits"),
        ({"\udc00": 1}, "lone surrogate U\\+DC00"),
    ],
    ids=["5000 deep", "5000 digits", "surrogate in a key"],
)
def test_what_python_itself_cannot_encode_is_refused_as_invalid(data: Any, named: str) -> None:
    """Never a bare RecursionError, ValueError or UnicodeEncodeError."""
    with pytest.raises(InvalidMessage, match=named):
        plan([make(data=data)], Keyspace(shards=4), 1_000_000)


def test_message_delete_builds_a_delete_without_data() -> None:
    message = Message.delete("obj:1", key="k", version=3, tags={"a": "b"}, ttl_ms=10)
    assert (message.deleted, message.data, message.version, message.ttl_ms) == (True, None, 3, 10)
    (call,) = plan([message], Keyspace(shards=4), 10_000).calls
    assert call.drafts[0].deleted and call.args[2].endswith(b',"deleted":true}')  # type: ignore[union-attr]
