"""Envelope v1 codec against the shared vectors, plus rejection of bad bytes."""

from __future__ import annotations

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


@pytest.mark.parametrize("case", ENVELOPES["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_are_rejected(case: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeDecodeError, match="not a valid envelope"):
        decode_envelope(case["encoded"].encode())


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
