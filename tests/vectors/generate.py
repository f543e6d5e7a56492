"""Regenerate the shared test vectors: ``python tests/vectors/generate.py``.

The JSON files next to this script are the cross-language contract: the Python
package and js-client/ both test against them. Regenerate only on purpose (a
new case, or a deliberate protocol change) and review the diff.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from centrifugo_async.protocol.envelope import Envelope, default_idempotency_key, encode_envelope
from centrifugo_async.protocol.routing import fnv1a_32, shard_for

HERE = Path(__file__).parent
SHARD_COUNTS = (1, 2, 8, 16, 64, 1000)
ROUTING_KEYS = (
    "a",
    "user:1",
    "user:2",
    "order:42",
    "document:7f3a9c",
    "Ünïcödé-ключ",
    "emoji:🚀",
    "日本語のキー",
    "x" * 200,
    " spaces and\ttabs ",
)


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _envelope(**fields: Any) -> Envelope[Any]:
    base: dict[str, Any] = dict(
        v=1, channel="obj:1", key="user:1", version=1, seq=1, shard=0, ts=1700000000000, data={}
    )
    base.update(fields)
    return Envelope(**base)


VALID = {
    "minimal": _envelope(),
    "nested data": _envelope(
        data={"name": "Ada", "tags": ["a", "b"], "n": 1.5, "ok": True, "nil": None}
    ),
    "scalar data": _envelope(data="just a string"),
    "max version": _envelope(version=2**53 - 1, seq=9007199254740991),
    "version zero": _envelope(version=0),
    "unicode": _envelope(channel="obj:ключ", key="Ünïcödé-ключ", data={"text": "日本語 🚀"}),
    "all optional fields": _envelope(
        tags={"kind": "update", "region": "eu"},
        idempotency_key="order-42-v7",
        ttl_ms=2000,
        shard=5,
        seq=77,
    ),
    "quotes in strings": _envelope(key='a"seq":1,', channel='obj:"q"', data={'"seq":1,': 1}),
    "delete": _envelope(version=8, data=None, deleted=True),
    "delete with options": _envelope(
        version=9, data=None, deleted=True, tags={"kind": "delete"}, ttl_ms=5000
    ),
    "traced": _envelope(traceparent=TRACEPARENT),
    "traced delete with options": _envelope(
        version=9, data=None, deleted=True, ttl_ms=5000, traceparent=TRACEPARENT
    ),
}

# Envelopes written another way than the canonical one: readers decode them to the
# canonical envelope (a default spelled out is the same as the field left out).
EQUIVALENT = {
    "explicit deleted false": (
        b'{"v":1,"channel":"obj:1","key":"user:1","version":1,"seq":1,"shard":0,'
        b'"ts":1700000000000,"data":{},"deleted":false}',
        _envelope(),
    ),
    "null traceparent": (
        b'{"v":1,"channel":"obj:1","key":"user:1","version":1,"seq":1,"shard":0,'
        b'"ts":1700000000000,"data":{},"traceparent":null}',
        _envelope(),
    ),
}

# A reader that predates a field ignores it (it is unknown to that reader). For
# each new field: what such a reader decodes from an envelope that uses it.
OLD_READERS = {
    "deleted": {
        "encoded": "delete",
        "note": (
            "a reader written before `deleted` existed sees an ordinary update whose data is "
            "null, at the delete's version: its version gate records that version, so older "
            "updates are still dropped, and the app must treat null data as a removal"
        ),
    },
    "traceparent": {
        "encoded": "traced",
        "note": (
            "a reader written before `traceparent` existed ignores it: the message is "
            "delivered and applied as before, only its trace is not continued"
        ),
    },
}

# Readers must accept fields they do not know (forward compatibility).
UNKNOWN_FIELD = (
    b'{"v":1,"channel":"obj:1","key":"k","version":3,"seq":4,"shard":0,"ts":1,'
    b'"data":{"x":1},"future_field":{"any":"thing"}}'
)


def _with_data(data: bytes, extra: bytes = b"") -> bytes:
    """A valid v1 header around hand-written ``data`` bytes (and extra fields)."""
    return (
        b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":'
        + data
        + extra
        + b"}"
    )


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


INVALID_ENVELOPE = "invalid_envelope"

# name -> (entry bytes, the reason every reader gives). Entries that are not
# UTF-8 go into the file as base64.
INVALID: dict[str, tuple[bytes, str]] = {
    "not json": (b"garbage", INVALID_ENVELOPE),
    "json array": (b"[1,2,3]", INVALID_ENVELOPE),
    "unknown major version": (b'{"v":2,"stuff":true}', INVALID_ENVELOPE),
    "missing key": (
        b'{"v":1,"channel":"c","version":1,"seq":1,"shard":0,"ts":1,"data":1}',
        INVALID_ENVELOPE,
    ),
    "missing data": (
        b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1}',
        INVALID_ENVELOPE,
    ),
    "empty channel": (
        b'{"v":1,"channel":"","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":1}',
        INVALID_ENVELOPE,
    ),
    "empty key": (
        b'{"v":1,"channel":"c","key":"","version":1,"seq":1,"shard":0,"ts":1,"data":1}',
        INVALID_ENVELOPE,
    ),
    "negative version": (
        b'{"v":1,"channel":"c","key":"k","version":-1,"seq":1,"shard":0,"ts":1,"data":1}',
        INVALID_ENVELOPE,
    ),
    "version above 2**53-1": (
        b'{"v":1,"channel":"c","key":"k","version":9007199254740992,"seq":1,"shard":0,'
        b'"ts":1,"data":1}',
        INVALID_ENVELOPE,
    ),
    "string version": (
        b'{"v":1,"channel":"c","key":"k","version":"1","seq":1,"shard":0,"ts":1,"data":1}',
        INVALID_ENVELOPE,
    ),
    "zero seq": (
        b'{"v":1,"channel":"c","key":"k","version":1,"seq":0,"shard":0,"ts":1,"data":1}',
        INVALID_ENVELOPE,
    ),
    "non-string tag": (
        b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":1,'
        b'"tags":{"a":1}}',
        INVALID_ENVELOPE,
    ),
    "delete with data": (
        b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
        b'"data":{"x":1},"deleted":true}',
        INVALID_ENVELOPE,
    ),
    "non-boolean deleted": (
        b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
        b'"data":null,"deleted":1}',
        INVALID_ENVELOPE,
    ),
    "non-string traceparent": (
        b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":1,'
        b'"traceparent":7}',
        INVALID_ENVELOPE,
    ),
    "null deleted": (
        b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
        b'"data":null,"deleted":null}',
        INVALID_ENVELOPE,
    ),
    # The JSON profile (I-JSON, RFC 7493): what some SDK cannot decode.
    "data nested 101 deep": (_with_data(_nested(101)), "too_deep"),
    "data nested 1000 deep": (_with_data(_nested(1000)), "too_deep"),
    "objects nested 101 deep": (_with_data(b'{"a":' * 101 + b"1" + b"}" * 101), "too_deep"),
    "unknown field nested 101 deep": (_with_data(b"1", b',"x":' + _nested(101)), "too_deep"),
    "invalid UTF-8 in data": (_with_data(b'"caf\xe9"'), "invalid_unicode"),
    "invalid UTF-8 in a key of data": (_with_data(b'{"\xff":1}'), "invalid_unicode"),
    "UTF-8 encoded surrogate": (_with_data(b'"\xed\xa0\x80"'), "invalid_unicode"),
    "overlong UTF-8": (_with_data(b'"\xc0\xaf"'), "invalid_unicode"),
    "lone high surrogate escape": (_with_data(b'"a\\ud800b"'), "invalid_unicode"),
    "lone low surrogate escape": (_with_data(b'"\\udc00"'), "invalid_unicode"),
    "reversed surrogate pair": (_with_data(b'"\\ude80\\ud83d"'), "invalid_unicode"),
    "lone surrogate in an object key": (_with_data(b'{"\\ud800":1}'), "invalid_unicode"),
    "lone surrogate in the channel": (
        b'{"v":1,"channel":"\\ud800","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":1}',
        "invalid_unicode",
    ),
    "5000-digit integer": (_with_data(b"1" * 5000), "number_out_of_range"),
    "400-digit integer": (_with_data(b"-" + b"9" * 400), "number_out_of_range"),
    "1e400": (_with_data(b"[1e400]"), "number_out_of_range"),
    "just above the largest double": (
        _with_data(b"1.7976931348623159e308"),
        "number_out_of_range",
    ),
    "unknown field out of range": (_with_data(b"1", b',"x":-1E999'), "number_out_of_range"),
}

# Edge cases every reader accepts; their encoding is not canonical, so they are
# checked for acceptance and decoded value, not for a round trip.
ACCEPTED: dict[str, bytes] = {
    "data nested 100 deep": _with_data(_nested(100)),
    "largest double": _with_data(b"[1.7976931348623157e308,-1.7976931348623157e308]"),
    "integer beyond 2**64 within the double range": _with_data(b"18446744073709551616"),
    "tiny number rounds to zero": _with_data(b"1e-400"),
    "escaped surrogate pair": _with_data(b'"\\ud83d\\ude80"'),
    "escaped backslash before u": _with_data(b'"\\\\ud800"'),
    "noncharacter": _with_data('"\uffff\ufdd0"'.encode()),
    "brackets inside strings": _with_data(b'"' + b"[" * 500 + b'"'),
    "a 400-digit string": _with_data(b'"' + b"9" * 400 + b'"'),
    "unknown field with nesting": _with_data(b"1", b',"x":{"y":[1,2,{"z":null}]}'),
}

# What a producer must refuse to enqueue, written as lenient JSON (NaN,
# Infinity, lone surrogates and huge integers allowed, as Python's json reads
# them): each message's fields and the rule it breaks.
PRODUCER_REJECTS: dict[str, tuple[str, str]] = {
    "NaN in data": (
        '{"channel":"c","key":"k","version":1,"data":{"x":NaN}}',
        "number_out_of_range",
    ),
    "Infinity in data": (
        '{"channel":"c","key":"k","version":1,"data":[-Infinity]}',
        "number_out_of_range",
    ),
    "integer beyond the double range": (
        '{"channel":"c","key":"k","version":1,"data":1' + "0" * 400 + "}",
        "number_out_of_range",
    ),
    "data nested 101 deep": (
        '{"channel":"c","key":"k","version":1,"data":' + "[" * 101 + "]" * 101 + "}",
        "too_deep",
    ),
    "lone surrogate in data": (
        '{"channel":"c","key":"k","version":1,"data":"\\ud800"}',
        "invalid_unicode",
    ),
    "lone surrogate in a key of data": (
        '{"channel":"c","key":"k","version":1,"data":{"\\udc00":1}}',
        "invalid_unicode",
    ),
    "lone surrogate in the key": (
        '{"channel":"c","key":"k\\ud800","version":1,"data":1}',
        "invalid_unicode",
    ),
    "lone surrogate in the channel": (
        '{"channel":"\\udfff","key":"k","version":1,"data":1}',
        "invalid_unicode",
    ),
    "lone surrogate in a tag": (
        '{"channel":"c","key":"k","version":1,"data":1,"tags":{"t":"\\ud800"}}',
        "invalid_unicode",
    ),
}


def _entry(raw: bytes) -> dict[str, str]:
    try:
        return {"encoded": raw.decode()}
    except UnicodeDecodeError:
        return {"encoded_base64": base64.b64encode(raw).decode()}


def envelopes() -> dict[str, Any]:
    return {
        "valid": [
            {
                "name": name,
                "encoded": encode_envelope(env).decode(),
                "fields": json.loads(encode_envelope(env)),
                "idempotency_key": env.effective_idempotency_key,
            }
            for name, env in VALID.items()
        ],
        "unknown_field": {
            "encoded": UNKNOWN_FIELD.decode(),
            "canonical": encode_envelope(
                _envelope(key="k", version=3, seq=4, ts=1, data={"x": 1})
            ).decode(),
        },
        "equivalent": [
            {"name": name, "encoded": raw.decode(), "canonical": encode_envelope(env).decode()}
            for name, (raw, env) in EQUIVALENT.items()
        ],
        "old_readers": [
            {
                "field": field,
                "encoded": encode_envelope(VALID[case["encoded"]]).decode(),
                "old_reader_fields": {
                    name: value
                    for name, value in json.loads(encode_envelope(VALID[case["encoded"]])).items()
                    if name != field
                },
                "note": case["note"],
            }
            for field, case in OLD_READERS.items()
        ],
        "invalid": [
            {"name": name, **_entry(raw), "reason": reason}
            for name, (raw, reason) in INVALID.items()
        ],
        "accepted": [
            {"name": name, "encoded": raw.decode(), "data": json.loads(raw)["data"]}
            for name, raw in ACCEPTED.items()
        ],
        "producer_rejects": [
            {"name": name, "message": lenient, "reason": reason}
            for name, (lenient, reason) in PRODUCER_REJECTS.items()
        ],
    }


def routing() -> dict[str, Any]:
    return {
        "hash": "fnv1a_32 over UTF-8 bytes; shard = hash % shards",
        "cases": [
            {
                "key": key,
                "utf8_hex": key.encode().hex(),
                "fnv1a_32": fnv1a_32(key.encode()),
                "shards": {str(n): shard_for(key, n) for n in SHARD_COUNTS},
            }
            for key in ROUTING_KEYS
        ],
    }


def idempotency() -> list[dict[str, Any]]:
    cases = [("obj:1", "user:1", 1), ("obj:1", "user:1", 2), ("chat", "Ünïcödé", 2**53 - 1)]
    return [
        {"channel": c, "key": k, "version": v, "idempotency_key": default_idempotency_key(c, k, v)}
        for c, k, v in cases
    ]


def render() -> dict[str, str]:
    files = {
        "envelopes.json": envelopes(),
        "routing.json": routing(),
        "idempotency.json": idempotency(),
    }
    return {
        name: json.dumps(content, ensure_ascii=False, indent=2) + "\n"
        for name, content in files.items()
    }


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
