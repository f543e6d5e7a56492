"""Envelope v1 codec against the shared vectors, plus rejection of bad bytes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from centrifugo_async import (
    Envelope,
    EnvelopeDecodeError,
    decode_envelope,
    default_idempotency_key,
    encode_envelope,
)
from centrifugo_async.protocol.envelope import channel_of
from tests.vectors import generate

VECTORS = Path(__file__).parents[1] / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


ENVELOPES = load("envelopes.json")


def test_committed_vectors_match_the_implementation() -> None:
    """The vectors are the contract; the generator must reproduce them exactly."""
    for name, text in generate.render().items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, f"{name} drifted"


@pytest.mark.parametrize("case", ENVELOPES["valid"], ids=lambda c: c["name"])
def test_valid_vectors_round_trip(case: dict[str, Any]) -> None:
    envelope = decode_envelope(case["encoded"].encode())
    assert msgspec.to_builtins(envelope) == case["fields"]
    assert encode_envelope(envelope).decode() == case["encoded"]
    assert envelope.effective_idempotency_key == case["idempotency_key"]


@pytest.mark.parametrize("case", ENVELOPES["valid"], ids=lambda c: c["name"])
def test_raw_data_decoding_keeps_the_exact_bytes(case: dict[str, Any]) -> None:
    envelope = decode_envelope(case["encoded"].encode(), raw_data=True)
    assert isinstance(envelope.data, msgspec.Raw)
    assert json.loads(bytes(envelope.data)) == case["fields"]["data"]


def test_unknown_fields_are_ignored() -> None:
    case = ENVELOPES["unknown_field"]
    envelope = decode_envelope(case["encoded"].encode())
    assert encode_envelope(envelope).decode() == case["canonical"]


def entry_bytes(case: dict[str, Any]) -> bytes:
    if "encoded_base64" in case:
        return base64.b64decode(case["encoded_base64"])
    return str(case["encoded"]).encode()


@pytest.mark.parametrize("case", ENVELOPES["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_are_rejected_with_their_reason(case: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeDecodeError, match="not a valid envelope") as caught:
        decode_envelope(entry_bytes(case))
    assert caught.value.reason == case["reason"]


@pytest.mark.parametrize("case", ENVELOPES["accepted"], ids=lambda c: c["name"])
def test_edge_cases_of_the_json_profile_are_accepted(case: dict[str, Any]) -> None:
    assert decode_envelope(case["encoded"].encode()).data == case["data"]
    assert decode_envelope(case["encoded"]).data == case["data"]


def test_text_with_a_lone_surrogate_is_refused_as_unicode() -> None:
    text = '{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":"\ud800"}'
    with pytest.raises(EnvelopeDecodeError, match="lone surrogate U\\+D800") as caught:
        decode_envelope(text)
    assert caught.value.reason == "invalid_unicode"


def test_raw_data_decoding_also_checks_the_profile() -> None:
    (huge,) = [c for c in ENVELOPES["invalid"] if c["name"] == "1e400"]
    with pytest.raises(EnvelopeDecodeError) as caught:
        decode_envelope(entry_bytes(huge), raw_data=True)
    assert caught.value.reason == "number_out_of_range"


def test_raw_data_decoding_keeps_unknown_fields_out_of_the_envelope() -> None:
    case = ENVELOPES["unknown_field"]
    envelope = decode_envelope(case["encoded"].encode(), raw_data=True)
    assert type(envelope) is Envelope
    assert bytes(envelope.data) == b'{"x":1}'


@pytest.mark.parametrize(
    ("entry", "channel"),
    [
        (b'{"v":1,"channel":"obj:1","key":"k","data":' + b"[" * 2000 + b"]" * 2000 + b"}", "obj:1"),
        (b'{"v":1,"channel":"obj:\\u00e9","key":"k","data":"\\ud800"}', "obj:\u00e9"),
        (b'{"key":"k","channel":"late","data":1e999}', "late"),
        (b"garbage", None),
        (b'{"v":1,"channel":7}', None),
    ],
)
def test_the_channel_of_a_refused_entry_is_read_when_possible(
    entry: bytes, channel: str | None
) -> None:
    assert channel_of(entry) == channel


def test_unknown_major_version_is_named_in_the_error() -> None:
    with pytest.raises(EnvelopeDecodeError, match="major version v=2"):
        decode_envelope(b'{"v":2,"channel":"c","key":"k","version":1}')


@pytest.mark.parametrize("case", load("idempotency.json"), ids=lambda c: c["key"])
def test_default_idempotency_key_vectors(case: dict[str, Any]) -> None:
    key = default_idempotency_key(case["channel"], case["key"], case["version"])
    assert key == case["idempotency_key"]


def test_explicit_idempotency_key_wins() -> None:
    envelope = Envelope(
        v=1,
        channel="c",
        key="k",
        version=1,
        seq=1,
        shard=0,
        ts=0,
        data=None,
        idempotency_key="mine",
    )
    assert envelope.effective_idempotency_key == "mine"
    assert default_idempotency_key("c", "k", 1) != default_idempotency_key("c", "k", 2)


@pytest.mark.parametrize("case", ENVELOPES["equivalent"], ids=lambda c: c["name"])
def test_equivalent_spellings_decode_to_the_canonical_envelope(case: dict[str, Any]) -> None:
    envelope = decode_envelope(case["encoded"].encode())
    assert encode_envelope(envelope).decode() == case["canonical"]


def test_a_delete_decodes_with_the_flag_and_null_data() -> None:
    delete = next(c for c in ENVELOPES["valid"] if c["name"] == "delete")
    envelope = decode_envelope(delete["encoded"].encode())
    assert envelope.deleted is True and envelope.data is None
    raw = decode_envelope(delete["encoded"].encode(), raw_data=True)
    assert raw.deleted is True and bytes(raw.data) == b"null"
    assert decode_envelope(ENVELOPES["valid"][0]["encoded"].encode()).deleted is False


class _ReaderBeforeDeletes(msgspec.Struct, frozen=True):
    """Envelope v1 as a reader written before `deleted` existed decodes it."""

    v: int
    channel: str
    key: str
    version: int
    seq: int
    shard: int
    ts: int
    data: Any
    tags: dict[str, str] | None = None
    idempotency_key: str | None = None
    ttl_ms: int | None = None


@pytest.mark.parametrize("case", ENVELOPES["old_readers"], ids=lambda c: c["field"])
def test_what_an_old_reader_sees(case: dict[str, Any]) -> None:
    old = msgspec.json.decode(case["encoded"].encode(), type=_ReaderBeforeDeletes)
    seen = {k: v for k, v in msgspec.to_builtins(old).items() if v is not None or k == "data"}
    assert seen == case["old_reader_fields"]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (
            b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
            b'"data":[],"deleted":true}',
            "`data` must be null in a delete",
        ),
        (
            b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
            b'"data":null,"deleted":"yes"}',
            "deleted",
        ),
    ],
)
def test_a_bad_delete_is_named(payload: bytes, problem: str) -> None:
    for raw_data in (False, True):
        with pytest.raises(EnvelopeDecodeError, match=problem):
            decode_envelope(payload, raw_data=raw_data)
