"""Regenerate the shared test vectors: ``python tests/vectors/generate.py``.

The JSON files next to this script are the cross-language contract: the Python
package and js-client/ both test against them. Regenerate only on purpose (a
new case, or a deliberate protocol change) and review the diff.
"""

from __future__ import annotations

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

INVALID = {
    "not json": b"garbage",
    "json array": b"[1,2,3]",
    "unknown major version": b'{"v":2,"stuff":true}',
    "missing key": b'{"v":1,"channel":"c","version":1,"seq":1,"shard":0,"ts":1,"data":1}',
    "missing data": b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1}',
    "empty channel": (
        b'{"v":1,"channel":"","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":1}'
    ),
    "empty key": b'{"v":1,"channel":"c","key":"","version":1,"seq":1,"shard":0,"ts":1,"data":1}',
    "negative version": (
        b'{"v":1,"channel":"c","key":"k","version":-1,"seq":1,"shard":0,"ts":1,"data":1}'
    ),
    "version above 2**53-1": (
        b'{"v":1,"channel":"c","key":"k","version":9007199254740992,"seq":1,"shard":0,'
        b'"ts":1,"data":1}'
    ),
    "string version": (
        b'{"v":1,"channel":"c","key":"k","version":"1","seq":1,"shard":0,"ts":1,"data":1}'
    ),
    "zero seq": b'{"v":1,"channel":"c","key":"k","version":1,"seq":0,"shard":0,"ts":1,"data":1}',
    "non-string tag": (
        b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":1,'
        b'"tags":{"a":1}}'
    ),
    "delete with data": (
        b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
        b'"data":{"x":1},"deleted":true}'
    ),
    "non-boolean deleted": (
        b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
        b'"data":null,"deleted":1}'
    ),
    "non-string traceparent": (
        b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":1,'
        b'"traceparent":7}'
    ),
    "null deleted": (
        b'{"v":1,"channel":"c","key":"k","version":2,"seq":1,"shard":0,"ts":1,'
        b'"data":null,"deleted":null}'
    ),
}


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
        "invalid": [{"name": n, "encoded": raw.decode()} for n, raw in INVALID.items()],
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
