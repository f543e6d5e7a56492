"""The shared envelope vectors through the subscriber's data-validation path.

The SDK hands over a decoded JSON value (JSON protocol) or raw bytes (Protobuf
protocol); both must accept and reject exactly what ``decode_envelope`` does.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from centrifugo_async import EnvelopeDecodeError, decode_envelope
from centrifugo_async.client import envelope_from_data

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "envelopes.json").read_text(encoding="utf-8")
)


def entry_bytes(case: dict[str, Any]) -> bytes:
    if "encoded_base64" in case:
        return base64.b64decode(case["encoded_base64"])
    return str(case["encoded"]).encode()


def as_sdk_data(encoded: str | bytes) -> list[Any]:
    """Every shape the SDK may deliver ``encoded`` in."""
    raw = encoded.encode() if isinstance(encoded, str) else encoded
    shapes: list[Any] = [raw, bytearray(raw)]
    # Only the Protobuf protocol can carry bytes that are not JSON, or JSON
    # that Python's json cannot read (too deep, thousands of digits, not UTF-8).
    with contextlib.suppress(ValueError, RecursionError):
        shapes.append(json.loads(raw))
    return shapes


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_vectors_are_accepted(case: dict[str, Any]) -> None:
    expected = decode_envelope(case["encoded"])
    for data in as_sdk_data(case["encoded"]):
        envelope = envelope_from_data(data)
        assert envelope == expected
        assert msgspec.to_builtins(envelope) == case["fields"]


def test_unknown_fields_are_ignored() -> None:
    case = VECTORS["unknown_field"]
    for data in as_sdk_data(case["encoded"]):
        assert envelope_from_data(data) == decode_envelope(case["canonical"])


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_are_rejected_for_the_same_reason(case: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeDecodeError) as direct:
        decode_envelope(entry_bytes(case))
    for data in as_sdk_data(entry_bytes(case)):
        with pytest.raises(EnvelopeDecodeError) as caught:
            envelope_from_data(data)
        assert caught.value.reason == direct.value.reason == case["reason"]
        if case["reason"] == "invalid_envelope":
            assert str(caught.value) == str(direct.value)


@pytest.mark.parametrize("case", VECTORS["accepted"], ids=lambda c: c["name"])
def test_edge_cases_of_the_json_profile_are_accepted(case: dict[str, Any]) -> None:
    for data in as_sdk_data(case["encoded"]):
        assert envelope_from_data(data).data == case["data"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (float("inf"), "number_out_of_range"),
        ({"nested": [float("nan")]}, "number_out_of_range"),
        ("\udfff", "invalid_unicode"),
        (10**400, "number_out_of_range"),
    ],
)
def test_decoded_values_no_sdk_should_have_produced_are_refused(data: Any, reason: str) -> None:
    publication = {"v": 1, "channel": "c", "key": "k", "version": 1, "seq": 1, "shard": 0}
    with pytest.raises(EnvelopeDecodeError) as caught:
        envelope_from_data({**publication, "ts": 1, "data": data})
    assert caught.value.reason == reason


@pytest.mark.parametrize("data", [None, 42, "a string", [1, 2], {"v": 1}, {1, 2}, object(), 2**70])
def test_other_values_are_not_envelopes(data: object) -> None:
    with pytest.raises(EnvelopeDecodeError, match="not a valid envelope"):
        envelope_from_data(data)
