"""Envelope v1: the wire contract between publisher, relay and subscribers.

An envelope is one JSON object, byte for byte the same in the Redis list and in
the ``data`` of the Centrifugo publication, so subscribers see the key, version
and sequence number that the publisher assigned. ``docs/protocol.md`` is the
normative description; ``tests/vectors/`` holds examples every implementation
must decode and encode identically.

Compatibility rules: ``v`` is the *major* schema version and changes only for a
breaking change; readers reject majors they do not know. New fields are always
optional with a default, and readers ignore fields they do not know, so adding
one never breaks an old reader.

A delete is an envelope with ``deleted: true`` and ``data: null``: the object
``key`` is gone as of ``version``. A reader that predates the field sees an
ordinary update whose data is null, at that version (see the protocol page).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Final, Generic, TypeAlias, TypeVar

import msgspec

from ..exceptions import EnvelopeDecodeError
from . import ijson

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_OBJECT_VERSION",
    "Envelope",
    "channel_of",
    "decode_envelope",
    "default_idempotency_key",
    "encode_envelope",
]

ENVELOPE_VERSION: Final = 1
MAX_OBJECT_VERSION: Final = 2**53 - 1
"""Largest object version: the largest integer a JavaScript number holds exactly."""

DataT = TypeVar("DataT")

# The field rules, checked by msgspec's decoder itself (in C, while it parses).
_NonEmpty: TypeAlias = Annotated[str, msgspec.Meta(min_length=1)]
_ObjectVersion: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_OBJECT_VERSION)]
_Positive: TypeAlias = Annotated[int, msgspec.Meta(ge=1)]
_NonNegative: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]


class Envelope(
    msgspec.Struct, Generic[DataT], frozen=True, omit_defaults=True, forbid_unknown_fields=True
):
    """One message for one object, as enqueued and as delivered.

    Field order is the canonical encoding order (see the protocol page).
    ``Envelope[msgspec.Raw]`` keeps ``data`` as undecoded bytes.

    Decode with ``decode_envelope``, which ignores fields it does not know (the
    compatibility rule). The struct itself refuses them so that its decoder,
    the fast path, never skips a field unchecked; ``decode_envelope`` takes a
    slower path that checks every value when an entry has extra fields.
    """

    v: int
    channel: _NonEmpty
    key: _NonEmpty
    version: _ObjectVersion
    seq: _Positive
    shard: _NonNegative
    ts: int
    data: DataT
    tags: dict[str, str] | None = None
    idempotency_key: _NonEmpty | None = None
    ttl_ms: _Positive | None = None
    deleted: bool = False
    """True for a delete: the object is gone as of ``version`` (``data`` is null)."""
    traceparent: str | None = None
    """The publisher's W3C trace context (``Publisher(tracing=True)``), for the relay's
    span; a reader ignores one it cannot parse."""

    @property
    def effective_idempotency_key(self) -> str:
        """The idempotency key sent to Centrifugo: explicit, or derived."""
        if self.idempotency_key is not None:
            return self.idempotency_key
        return default_idempotency_key(self.channel, self.key, self.version)


class _WithUnknownFields(Envelope[DataT], frozen=True, forbid_unknown_fields=False):
    """The same fields, for entries that also carry fields this reader does not know."""


_REFUSED: Final = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
"""What msgspec raises for bytes it will not decode: msgspec 0.18.0 raises
UnicodeDecodeError for invalid UTF-8 inside a string (later releases DecodeError),
and nesting past Python's recursion limit raises RecursionError."""

_NOT_SCREENED: Final = bytes(b for b in range(256) if b not in ijson.SCREENED)
_SCREEN_LIMIT: Final = ijson.SCREEN_LIMIT
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope[Any])
_tolerant_decoder = msgspec.json.Decoder(_WithUnknownFields[Any])
_raw_data_decoder = msgspec.json.Decoder(_WithUnknownFields[msgspec.Raw])
_value_decoder = msgspec.json.Decoder()


def encode_envelope(envelope: Envelope[Any]) -> bytes:
    """Canonical JSON bytes of ``envelope``."""
    return _encoder.encode(envelope)


def decode_envelope(payload: bytes | str, *, raw_data: bool = False) -> Envelope[Any]:
    """Decode and validate one envelope.

    The bytes must keep to the JSON profile of ``protocol.ijson`` (UTF-8, nesting
    at most ``MAX_DEPTH`` deep, every number a finite double) and hold a v1
    envelope. With ``raw_data=True`` the ``data`` field is returned as
    ``msgspec.Raw`` (its exact bytes, for forwarding; this costs a second parse).

    Raises ``EnvelopeDecodeError`` naming the problem: its ``reason`` is the rule
    of ``ijson.Rule`` that was broken, or ``invalid_envelope`` (not JSON, a
    missing or mistyped field, an out-of-range value, an unknown major version).
    """
    document = payload if type(payload) is bytes else _as_bytes(payload)
    # ijson.screen, its first pass inlined: on this path (every entry the relay
    # forwards) the two function calls cost half as much as the check itself.
    screened = document.translate(None, _NOT_SCREENED)
    if len(screened) > _SCREEN_LIMIT:
        violation = ijson.screen_closely(document, screened)
        if violation is not None:
            raise EnvelopeDecodeError(f"not a valid envelope: {violation}", reason=violation.rule)
    try:
        envelope = _decoder.decode(document)
    except _REFUSED:
        envelope = _decode_checking_every_value(document)
    if envelope.v != ENVELOPE_VERSION:
        raise EnvelopeDecodeError(f"not a valid envelope: {_unknown_major(envelope.v)}")
    if envelope.deleted and envelope.data is not None:
        raise EnvelopeDecodeError(
            "not a valid envelope: `data` must be null in a delete (`deleted` is true)"
        )
    if raw_data:
        data = _raw_data_decoder.decode(document).data
        return msgspec.structs.replace(envelope, data=data)
    return envelope


def _as_bytes(payload: bytes | str) -> bytes:
    if isinstance(payload, bytes):  # a subclass of bytes
        return bytes(payload)
    problem = ijson.text_problem("the envelope text", payload)
    if problem is not None:
        raise EnvelopeDecodeError(f"not a valid envelope: {problem}", reason=problem.rule)
    return payload.encode("utf-8")


def _decode_checking_every_value(document: bytes) -> Envelope[Any]:
    """The slow path: unknown fields, or bytes the fast decoder refused.

    Decoding the whole document as plain values checks every value, unknown
    fields included, against the profile (msgspec refuses invalid UTF-8, lone
    surrogate escapes and numbers out of range); ``ijson.diagnose`` then names
    the rule for the error.
    """
    try:
        _value_decoder.decode(document)
    except _REFUSED as exc:
        violation = ijson.diagnose(document)
        if violation is not None:
            raise EnvelopeDecodeError(
                f"not a valid envelope: {violation}", reason=violation.rule
            ) from None
        raise EnvelopeDecodeError(
            f"not a valid envelope: {_decode_problem(document, exc)}"
        ) from None
    try:
        tolerant = _tolerant_decoder.decode(document)
    except _REFUSED as exc:
        raise EnvelopeDecodeError(
            f"not a valid envelope: {_decode_problem(document, exc)}"
        ) from None
    return Envelope(*msgspec.structs.astuple(tolerant))


class _MajorOnly(msgspec.Struct):
    v: int


class _ChannelOnly(msgspec.Struct):
    channel: str


def channel_of(document: bytes) -> str | None:
    """The ``channel`` of an entry that failed to decode, if it can still be read.

    For the dead-letter record of an entry whose header is fine but whose
    ``data`` is not: operators filter dead letters by channel. When the whole
    document does not parse, the canonical field order (``v`` then ``channel``)
    still gives the channel away.
    """
    try:
        return _channel_decoder.decode(document).channel
    except _REFUSED:
        pass
    canonical = _CANONICAL_CHANNEL.match(document)
    if canonical is None:
        return None
    try:
        return msgspec.json.decode(canonical.group(1), type=str)
    except _REFUSED:
        return None


_channel_decoder = msgspec.json.Decoder(_ChannelOnly)
_CANONICAL_CHANNEL: Final = re.compile(rb'\{"v":[0-9]+,"channel":("[^"\\]*(?:\\.[^"\\]*)*")')


def _decode_problem(payload: bytes, exc: Exception) -> str:
    """Prefer "unknown major version" over the field error a newer major causes."""
    try:
        major = msgspec.json.decode(payload, type=_MajorOnly).v
    except _REFUSED:
        return str(exc)
    if major != ENVELOPE_VERSION:
        return _unknown_major(major)
    return str(exc)


def _unknown_major(major: int) -> str:
    return f"unsupported envelope major version v={major} (this reader knows v=1)"


def default_idempotency_key(channel: str, key: str, version: int) -> str:
    """Idempotency key used when the publisher gave none.

    ``"ca1-" + hex(sha256(json([channel, key, version])))[:32]``: the same object
    version published twice to the same channel is delivered once by Centrifugo
    (within its 5 minute idempotency window), which makes relay retries safe.
    """
    material = _encoder.encode([channel, key, version])
    return "ca1-" + hashlib.sha256(material).hexdigest()[:32]
