"""The JSON every list entry must be: I-JSON (RFC 7493), as every Centrifugo SDK decodes it.

The relay forwards a list entry byte for byte as the ``data`` of a publication,
so whatever a producer writes reaches every subscriber's JSON decoder. Python's
``json`` raises ``RecursionError`` about 1,000 levels deep and ``ValueError``
past 4,300 digits, JavaScript turns ``1e400`` into ``Infinity``, Go refuses it,
and invalid UTF-8 cuts a centrifuge-python connection off. An entry is therefore
accepted only if it keeps to these rules (the ``Rule`` value is the dead-letter
reason when it does not):

* ``invalid_unicode``: the bytes are UTF-8, and no string (value or object key)
  holds an escaped lone surrogate such as ``"\\ud800"``;
* ``too_deep``: no envelope field nests containers more than ``MAX_DEPTH``
  levels (``{"a": [1]}`` is 2 levels, a scalar 0);
* ``number_out_of_range``: every number rounds to a finite IEEE 754 double
  (``1e308`` and ``2**64`` are fine, ``1e309`` and a 400-digit integer are not;
  a number too small to represent rounds to zero and is fine).

Deliberately not checked, although RFC 7493 names them: duplicate object keys
and Unicode noncharacters (U+FFFE, U+FDD0 ...). Every decoder accepts both, and
finding them would cost a walk over every value.

``encode`` turns a Python value into bytes that keep these rules, or says which
one it breaks: msgspec alone would write ``NaN`` as ``null``, raise a bare
``RecursionError`` or ``UnicodeEncodeError``, and write integers of any length.

``screen`` is the hot-path half of reading: one ``bytes.translate`` pass that proves most
entries cannot be too deep nor hold an over-long integer, and exact checks for
the rest. It runs before any JSON decoder, so no decoder ever recurses deeper
than the limit. UTF-8, surrogate escapes and floats out of range are left to
msgspec's decoder, which refuses them; ``diagnose`` then names the rule an
entry broke, after the fact, for the dead-letter record.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import re
from typing import Any, Final

import attrs
import msgspec

__all__ = [
    "MAX_DEPTH",
    "SCREENED",
    "SCREEN_LIMIT",
    "Rule",
    "Unencodable",
    "Violation",
    "diagnose",
    "encode",
    "screen",
    "screen_closely",
    "text_problem",
]

MAX_DEPTH: Final = 100
"""Deepest nesting of containers inside any envelope field (``data`` included)."""

_DOCUMENT_DEPTH: Final = MAX_DEPTH + 1
"""The envelope object itself is the first level."""

_LONGEST_FINITE_INTEGER: Final = 309
"""Digits of the largest double (1.797...e308): an integer with more is out of range."""


class Rule(enum.StrEnum):
    """A rule of the profile; the value is the dead-letter reason for breaking it."""

    UNICODE = "invalid_unicode"
    DEPTH = "too_deep"
    NUMBER = "number_out_of_range"


@attrs.frozen
class Violation:
    """Which rule a document breaks, and where."""

    rule: Rule
    detail: str

    def __str__(self) -> str:
        return self.detail


SCREENED: Final = b"0123456789[{"
"""The bytes ``screen`` looks at first: digits and opening brackets."""

SCREEN_LIMIT: Final = _DOCUMENT_DEPTH
"""A document holding at most this many ``SCREENED`` bytes can be neither too deep
nor hold an integer of ``_LONGEST_FINITE_INTEGER`` digits, whatever its strings
contain: one C pass (``bytes.translate``) clears most entries."""

_NOT_SCREENED: Final = bytes(b for b in range(256) if b not in SCREENED)
_DIGITS_AS_ZERO: Final = bytes(ord("0") if b in b"0123456789" else ord(".") for b in range(256))
_DIGIT_RUN: Final = b"0" * _LONGEST_FINITE_INTEGER

_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_TOKEN: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9][0-9.eE+-]*', re.DOTALL)
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_BRACKETS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[{]}")


def screen(document: bytes) -> Violation | None:
    """Depth and integer length of an envelope's bytes, checked without decoding it.

    Cheap for typical entries (one C pass); exact for the others. Run it before
    handing the bytes to any JSON decoder.
    """
    screened = document.translate(None, _NOT_SCREENED)
    if len(screened) <= SCREEN_LIMIT:
        return None
    return screen_closely(document, screened)


def screen_closely(document: bytes, screened: bytes) -> Violation | None:
    """``screen`` for a document whose ``SCREENED`` bytes its first pass did not clear."""
    openers = screened.count(b"[") + screened.count(b"{")
    if openers > _DOCUMENT_DEPTH:
        problem = _depth_problem(document)
        if problem is not None:
            return problem
    if len(screened) - openers >= _LONGEST_FINITE_INTEGER and _DIGIT_RUN in document.translate(
        _DIGITS_AS_ZERO
    ):
        return _number_problem(document)
    return None


def diagnose(document: bytes) -> Violation | None:
    """The first rule ``document`` breaks, or None if it keeps them all.

    Exact and slow: meant for bytes a decoder already refused, to say why.
    Syntax errors are not its business; it returns None for them.
    """
    try:
        document.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Violation(
            Rule.UNICODE,
            f"not UTF-8: {exc.reason} (byte 0x{document[exc.start]:02x} at offset {exc.start})",
        )
    return _surrogate_problem(document) or _depth_problem(document) or _number_problem(document)


def text_problem(name: str, text: str) -> Violation | None:
    """Why the string ``text`` (called ``name`` in the message) cannot be sent as UTF-8."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Violation(
            Rule.UNICODE,
            f"{name} holds a lone surrogate U+{ord(text[exc.start]):04X} at index "
            f"{exc.start}, which UTF-8 cannot encode",
        )
    return None


class Unencodable(ValueError):
    """A value that cannot be written as JSON every SDK decodes; ``violation`` says why."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    """``value`` as compact JSON that keeps the profile, or ``Unencodable``.

    Values msgspec cannot encode at all still raise its ``TypeError``. The
    check for NaN and infinities (which msgspec writes as ``null``) walks the
    value only when the output holds a ``null``.
    """
    try:
        document = _encoder.encode(value)
    except RecursionError:
        raise Unencodable(
            Violation(Rule.DEPTH, f"nested far deeper than the limit of {MAX_DEPTH} levels")
        ) from None
    except UnicodeEncodeError as exc:
        character = ord(exc.object[exc.start])
        raise Unencodable(
            Violation(
                Rule.UNICODE,
                f"a string holds a lone surrogate U+{character:04X}, which UTF-8 cannot encode",
            )
        ) from None
    except ValueError as exc:
        if "digits" not in str(exc):
            raise
        raise Unencodable(
            Violation(
                Rule.NUMBER,
                "an integer of thousands of digits is outside the range of an IEEE 754 double",
            )
        ) from None
    violation = screen(document) or (_non_finite(value) if b"null" in document else None)
    if violation is not None:
        raise Unencodable(violation)
    return document


def _non_finite(value: Any) -> Violation | None:
    """The first NaN or infinity in ``value``, with its JSON path."""
    stack: list[tuple[Any, str]] = [(msgspec.to_builtins(value), "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return Violation(
                Rule.NUMBER, f"`{path}` is {item}: JSON has no NaN or infinity (null would hide it)"
            )
        if isinstance(item, dict):
            stack.extend((child, f"{path}.{key}") for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return None


def _depth_problem(document: bytes) -> Violation | None:
    structure = _STRING.sub(b'""', document).translate(_BRACKETS, _NOT_BRACKET)
    depth = max(itertools.accumulate(memoryview(structure).cast("b")), default=0)
    if depth <= _DOCUMENT_DEPTH:
        return None
    return Violation(
        Rule.DEPTH,
        f"JSON nested {depth - 1} levels deep inside the envelope, over the limit of {MAX_DEPTH}",
    )


def _number_problem(document: bytes) -> Violation | None:
    for match in _TOKEN.finditer(document):
        token = match.group()
        if token.startswith(b'"'):
            continue
        try:
            value = float(token)
        except ValueError:
            continue  # a syntax error, for the decoder to report
        if math.isinf(value):
            shown = token if len(token) <= 24 else token[:12] + b"..." + token[-6:]
            return Violation(
                Rule.NUMBER,
                f"number {shown.decode()} ({len(token)} characters, at offset "
                f"{match.start()}) is outside the range of an IEEE 754 double",
            )
    return None


def _surrogate_problem(document: bytes) -> Violation | None:
    if not _SURROGATE_ESCAPE.search(document):
        return None
    for match in _STRING.finditer(document):
        token = match.group()
        if not _SURROGATE_ESCAPE.search(token):
            continue
        try:
            text = json.loads(token)
        except ValueError:
            continue  # a syntax error, for the decoder to report
        problem = text_problem("a string", text)
        if problem is not None:
            return Violation(
                Rule.UNICODE, f"{problem} (the string starts at offset {match.start()})"
            )
    return None
