"""The JSON profile (``protocol.ijson``): the fast checks agree with a plain reference.

``decode_envelope`` decides most entries in one C pass plus msgspec's decoder
and falls back to exact checks only for suspicious ones. A reference written
the obvious way (Python's ``json`` reading every number as a ``Decimal``, then
a walk over the result) must reach the same verdict on thousands of generated
documents, hostile ones included.
"""

from __future__ import annotations

import decimal
import json
import math
import random
from typing import Any

import pytest

from centrifugo_async import EnvelopeDecodeError, decode_envelope
from centrifugo_async.protocol import ijson

HEADER = b'{"v":1,"channel":"c","key":"k","version":1,"seq":1,"shard":0,"ts":1,"data":'


class _Members(list[tuple[str, Any]]):
    """A JSON object as the list of its members."""


def reference_rules(document: bytes) -> set[str]:
    """Every profile rule ``document`` breaks, the slow and obvious way."""
    broken: set[str] = set()
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError:
        broken.add("invalid_unicode")
        text = document.decode("utf-8", "replace")
    value = json.loads(
        text,
        parse_int=decimal.Decimal,
        parse_float=decimal.Decimal,
        object_pairs_hook=_Members,  # keeps every member, duplicates included
    )
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _Members):
            if depth + 1 > ijson.MAX_DEPTH + 1:
                broken.add("too_deep")
            for key, child in item:
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth + 1 > ijson.MAX_DEPTH + 1:
                broken.add("too_deep")
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                broken.add("invalid_unicode")
        elif isinstance(item, decimal.Decimal) and math.isinf(float(item)):
            broken.add("number_out_of_range")
    return broken


def random_string(rng: random.Random) -> bytes:
    pieces = []
    for _ in range(rng.randrange(6)):
        pieces.append(
            rng.choice(
                [
                    b"abc",
                    b"1e5",
                    b"9" * rng.choice([3, 320]),
                    "é日🚀".encode(),
                    b"\\n",
                    b'\\"',
                    b"\\\\",
                    b"[{",
                    b"\\u00e9",
                    b"\\ud83d\\ude80",
                    b"\\ud800",
                    b"\\udc00x",
                    b"\\\\ud800",
                    b"\xff",
                    b"\xed\xa0\x80",
                ]
            )
        )
    return b'"' + b"".join(pieces) + b'"'


def random_number(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b"0",
            b"-17",
            b"3.25",
            b"1e308",
            b"1.7976931348623157e308",
            b"1.7976931348623159e308",
            b"-2E+400",
            b"5e-400",
            b"18446744073709551616",
            b"1" + b"0" * rng.choice([300, 308, 309, 400]),
            b"0." + b"0" * 350 + b"1",
        ]
    )


def random_value(rng: random.Random, depth: int) -> bytes:
    if depth <= 0 or rng.random() < 0.3:
        kind = rng.randrange(4)
        if kind == 0:
            return random_number(rng)
        if kind == 1:
            return random_string(rng)
        return rng.choice([b"true", b"false", b"null"])
    if rng.random() < 0.5:
        items = [random_value(rng, depth - 1) for _ in range(rng.randrange(1, 3))]
        return b"[" + b",".join(items) + b"]"
    members = [
        random_string(rng) + b":" + random_value(rng, depth - 1) for _ in range(rng.randrange(1, 3))
    ]
    return b"{" + b",".join(members) + b"}"


def random_document(rng: random.Random) -> bytes:
    depth = rng.choice([2, 5, 60, 99, 100, 101, 102, 150])
    spine = rng.choice([b"[", b'{"a":'])
    closer = b"]" if spine == b"[" else b"}"
    data = spine * (depth - 1) + random_value(rng, 1) + closer * (depth - 1)
    extra = b',"future":' + random_value(rng, 2) if rng.random() < 0.2 else b""
    return HEADER + data + extra + b"}"


@pytest.mark.parametrize("seed", range(8))
def test_the_fast_checks_agree_with_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    verdicts = {"accepted": 0, "too_deep": 0, "invalid_unicode": 0, "number_out_of_range": 0}
    for _ in range(400):
        document = random_document(rng)
        expected = reference_rules(document)
        try:
            decode_envelope(document)
        except EnvelopeDecodeError as exc:
            assert exc.reason in expected, (document[:300], str(exc), expected)
            verdicts[exc.reason] += 1
        else:
            assert not expected, (document[:300], expected)
            verdicts["accepted"] += 1
    assert all(verdicts.values()), f"the generator missed a verdict: {verdicts}"


def test_screen_passes_typical_entries_without_looking_further() -> None:
    entry = HEADER + b'{"key":"key:123","version":12,"t":1700000000000000,"pad":"xxxx"}}'
    assert ijson.screen(entry) is None


@pytest.mark.parametrize(
    ("document", "rule"),
    [
        (HEADER + b"[" * 101 + b"]" * 101 + b"}", ijson.Rule.DEPTH),
        (HEADER + b"1" * 309 + b"}", None),
        (HEADER + b"2" * 309 + b"}", ijson.Rule.NUMBER),
        (HEADER + b"[" + b",".join([b"123456789"] * 60) + b"]}", None),
        (HEADER + b'"' + b"[" * 300 + b'"}', None),
        (HEADER + b'"' + b"9" * 400 + b'"}', None),
    ],
)
def test_screen_is_exact_for_the_entries_it_looks_into(
    document: bytes, rule: ijson.Rule | None
) -> None:
    found = ijson.screen(document)
    assert (found.rule if found else None) == rule


@pytest.mark.parametrize(
    ("document", "rule", "detail"),
    [
        (b'"\xe9"', ijson.Rule.UNICODE, "byte 0xe9 at offset 1"),
        (b'{"a":"x\\udfff"}', ijson.Rule.UNICODE, "lone surrogate U+DFFF at index 1"),
        (b"[[[1]]]", None, ""),
        (b"[-1e309]", ijson.Rule.NUMBER, "number -1e309 (6 characters, at offset 1)"),
        (b"[" + b"7" * 500 + b"]", ijson.Rule.NUMBER, "777777777777...777777 (500 characters"),
    ],
)
def test_diagnose_names_the_rule_and_where(
    document: bytes, rule: ijson.Rule | None, detail: str
) -> None:
    found = ijson.diagnose(document)
    assert (found.rule if found else None) == rule
    assert detail in (str(found) if found else "")


def test_strings_that_utf8_cannot_encode_are_named() -> None:
    assert ijson.text_problem("`key`", "plain") is None
    assert ijson.text_problem("`key`", "ключ 🚀") is None
    problem = ijson.text_problem("`key`", "ab\udc80")
    assert problem is not None and problem.rule is ijson.Rule.UNICODE
    assert (
        str(problem) == "`key` holds a lone surrogate U+DC80 at index 2, which UTF-8 cannot encode"
    )
