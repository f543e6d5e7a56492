"""``_split_at_seq``: each envelope is pre-encoded in two halves around its ``seq``.

The enqueue script only concatenates ``head .. seq .. tail``, so the cut must sit
exactly around the value, whatever the strings before it contain.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from centrifugo_async import InvalidMessage, Message, PayloadTooLarge
from centrifugo_async.protocol import Envelope, decode_envelope
from centrifugo_async.publisher._plan import _draft, _split_at_seq

MARKER = '"seq":1,'
LIMIT = 1_000_000
MAX_SEQ = 2**53 - 1  # 16 digits: 15 more than the placeholder


def draft(**overrides: Any) -> Envelope[Any]:
    fields: dict[str, Any] = dict(channel="obj:1", data={"a": 1}, key="user:1", version=3)
    fields.update(overrides)
    return _draft(Message(**fields), shards=8, now_ms=1_700_000_000_000)


def splice(head: bytes, seq: int, tail: bytes) -> bytes:
    return head + str(seq).encode() + tail


def test_the_halves_sit_exactly_around_the_seq_value() -> None:
    envelope = draft()
    head, tail = _split_at_seq(envelope, LIMIT)
    assert head.endswith(b'"seq":')
    assert tail.startswith(b",")
    assert splice(head, 1, tail) == msgspec.json.encode(envelope)


@pytest.mark.parametrize("seq", [1, 42, 10**9, MAX_SEQ])
def test_any_seq_spliced_in_gives_the_same_envelope_with_that_seq(seq: int) -> None:
    envelope = draft(tags={"t": "x"}, idempotency_key="idem", ttl_ms=5_000)
    head, tail = _split_at_seq(envelope, LIMIT)
    decoded = decode_envelope(splice(head, seq, tail))
    assert decoded == msgspec.structs.replace(envelope, seq=seq)


@pytest.mark.parametrize(
    "overrides",
    [
        {"channel": MARKER},
        {"channel": f"a{MARKER}b"},
        {"key": MARKER},
        {"key": f'x",{MARKER}'},
        {"channel": '"seq":', "key": "1,"},
        {"key": "\\" + MARKER},  # a backslash before the quote stays escaped
        {"data": {"seq": 1, "x": MARKER}},
        {"tags": {"seq": MARKER}, "idempotency_key": MARKER},
    ],
)
def test_the_marker_text_inside_strings_does_not_fool_the_cut(overrides: dict[str, Any]) -> None:
    envelope = draft(**overrides)
    head, tail = _split_at_seq(envelope, LIMIT)
    decoded = decode_envelope(splice(head, 987_654, tail))
    assert decoded == msgspec.structs.replace(envelope, seq=987_654)
    assert decoded.channel == envelope.channel and decoded.key == envelope.key


def encoded_size(envelope: Envelope[Any]) -> int:
    head, tail = _split_at_seq(envelope, LIMIT)
    return len(head) + 1 + len(tail)


def test_payload_limit_leaves_room_for_the_longest_seq() -> None:
    envelope = draft(data="x" * 500)
    size = encoded_size(envelope)
    head, tail = _split_at_seq(envelope, size + 15)  # exactly fits the largest seq
    assert len(splice(head, MAX_SEQ, tail)) == size + 15
    with pytest.raises(PayloadTooLarge, match=f"is {size} bytes, over the limit of {size + 14}"):
        _split_at_seq(envelope, size + 14)


def test_payload_too_large_names_the_key() -> None:
    with pytest.raises(PayloadTooLarge, match="'user:1'"):
        _split_at_seq(draft(data="x" * 100), 50)


def test_data_that_cannot_be_encoded_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="not JSON-serialisable"):
        _split_at_seq(draft(data={"when": object()}), LIMIT)
