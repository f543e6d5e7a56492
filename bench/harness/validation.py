"""What checking the JSON profile costs per entry, measured in this process.

The relay checks every entry it forwards (``decode_envelope``: the fields and
the JSON profile of ``protocol.ijson``) and the publisher checks every message
it encodes (``ijson.encode``). Both are measured on the workload's own entry
(the payload size of the run) next to what the same step costs without the
profile: decoding the fields alone with ``data`` kept as raw bytes (how the
relay decoded entries before the profile), and msgspec's plain encoding.
"""

from __future__ import annotations

import timeit
from typing import Any

import msgspec

from centrifugo_async.protocol import ijson
from centrifugo_async.protocol.envelope import Envelope, decode_envelope, encode_envelope

from .settings import Settings

__all__ = ["run_validation"]

_ROUNDS = 20_000
_REPEATS = 7


def _microseconds(call: Any) -> float:
    best = min(timeit.repeat(call, number=_ROUNDS, repeat=_REPEATS))
    return round(best / _ROUNDS * 1e6, 3)


def run_validation(settings: Settings) -> dict[str, Any]:
    """µs per entry, best of several repeats, for the checks and their baselines."""
    w = settings.workload
    draft = Envelope(
        v=1,
        channel="obj:bench",
        key="key:123",
        version=12,
        seq=1,
        shard=3,
        ts=1_700_000_000_000,
        data={"key": "key:123", "version": 12, "t": 1_700_000_000_000_000, "pad": w.pad},
    )
    entry = encode_envelope(draft)
    fields_only = msgspec.json.Decoder(Envelope[msgspec.Raw])
    plain = msgspec.json.Encoder()
    decode_envelope(entry)
    return {
        "entry_bytes": len(entry),
        "relay_check_us": _microseconds(lambda: decode_envelope(entry)),
        "relay_fields_only_us": _microseconds(lambda: fields_only.decode(entry)),
        "profile_screen_us": _microseconds(lambda: ijson.screen(entry)),
        "publisher_check_us": _microseconds(lambda: ijson.encode(draft)),
        "publisher_encode_only_us": _microseconds(lambda: plain.encode(draft)),
    }
