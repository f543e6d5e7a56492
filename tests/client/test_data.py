"""The shared envelope vectors through the subscriber's data-validation path.

The SDK hands over a decoded JSON value (JSON protocol) or raw bytes (Protobuf
protocol); both must accept and reject exactly what ``decode_envelope`` does.
"""

from __future__ import annotations

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


def as_sdk_data(encoded: str) -> list[Any]:
    """Every shape the SDK may deliver ``encoded`` in."""
    shapes: list[Any] = [encoded.encode(), bytearray(encoded.encode())]
    # Only the Protobuf protocol can carry bytes that are not JSON.
    with contextlib.suppress(json.JSONDecodeError):
        shapes.append(json.loads(encoded))
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
def test_invalid_vectors_are_rejected(case: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeDecodeError) as direct:
        decode_envelope(case["encoded"])
    for data in as_sdk_data(case["encoded"]):
        with pytest.raises(EnvelopeDecodeError) as caught:
            envelope_from_data(data)
        assert str(caught.value) == str(direct.value)


@pytest.mark.parametrize("data", [None, 42, "a string", [1, 2], {"v": 1}, {1, 2}, object(), 2**70])
def test_other_values_are_not_envelopes(data: object) -> None:
    with pytest.raises(EnvelopeDecodeError, match="not a valid envelope"):
        envelope_from_data(data)
