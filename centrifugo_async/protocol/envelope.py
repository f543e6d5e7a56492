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
from typing import Any, Final, Generic, TypeVar

import msgspec

from ..exceptions import EnvelopeDecodeError

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_OBJECT_VERSION",
    "Envelope",
    "decode_envelope",
    "default_idempotency_key",
    "encode_envelope",
]

ENVELOPE_VERSION: Final = 1
MAX_OBJECT_VERSION: Final = 2**53 - 1
"""Largest object version: the largest integer a JavaScript number holds exactly."""

DataT = TypeVar("DataT")


class Envelope(msgspec.Struct, Generic[DataT], frozen=True, omit_defaults=True):
    """One message for one object, as enqueued and as delivered.

    Field order is the canonical encoding order (see the protocol page).
    ``Envelope[msgspec.Raw]`` keeps ``data`` as undecoded bytes, which is how the
    relay passes payloads through without re-encoding them.
    """

    v: int
    channel: str
    key: str
    version: int
    seq: int
    shard: int
    ts: int
    data: DataT
    tags: dict[str, str] | None = None
    idempotency_key: str | None = None
    ttl_ms: int | None = None
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


_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder(Envelope[Any])
_raw_decoder = msgspec.json.Decoder(Envelope[msgspec.Raw])


def encode_envelope(envelope: Envelope[Any]) -> bytes:
    """Canonical JSON bytes of ``envelope``."""
    return _encoder.encode(envelope)


def decode_envelope(payload: bytes | str, *, raw_data: bool = False) -> Envelope[Any]:
    """Decode and validate one envelope.

    With ``raw_data=True`` the ``data`` field stays as ``msgspec.Raw`` (the exact
    bytes), which is cheaper and lets the caller forward it unchanged.

    Raises ``EnvelopeDecodeError`` naming the problem: not JSON, a missing or
    mistyped field, an out-of-range value, or an unknown major version.
    """
    decoder = _raw_decoder if raw_data else _any_decoder
    try:
        envelope = decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise EnvelopeDecodeError(
            f"not a valid envelope: {_decode_problem(payload, exc)}"
        ) from None
    problem = _validation_problem(envelope)
    if problem is not None:
        raise EnvelopeDecodeError(f"not a valid envelope: {problem}")
    return envelope


class _MajorOnly(msgspec.Struct):
    v: int


def _decode_problem(payload: bytes | str, exc: msgspec.DecodeError) -> str:
    """Prefer "unknown major version" over the field error a newer major causes."""
    try:
        major = msgspec.json.decode(payload, type=_MajorOnly).v
    except msgspec.DecodeError:
        return str(exc)
    if major != ENVELOPE_VERSION:
        return f"unsupported envelope major version v={major} (this reader knows v=1)"
    return str(exc)


def _validation_problem(env: Envelope[Any]) -> str | None:
    if env.v != ENVELOPE_VERSION:
        return f"unsupported envelope major version v={env.v} (this reader knows v=1)"
    if not env.channel:
        return "`channel` is empty"
    if not env.key:
        return "`key` is empty"
    if not 0 <= env.version <= MAX_OBJECT_VERSION:
        return f"`version` {env.version} is outside 0..2**53-1"
    if env.seq < 1:
        return f"`seq` {env.seq} must be >= 1"
    if env.shard < 0:
        return f"`shard` {env.shard} must be >= 0"
    if env.ttl_ms is not None and env.ttl_ms < 1:
        return f"`ttl_ms` {env.ttl_ms} must be >= 1"
    if env.idempotency_key == "":
        return "`idempotency_key` is empty"
    if env.deleted and not _is_null(env.data):
        return "`data` must be null in a delete (`deleted` is true)"
    return None


def _is_null(data: object) -> bool:
    return data is None or (isinstance(data, msgspec.Raw) and bytes(data) == b"null")


def default_idempotency_key(channel: str, key: str, version: int) -> str:
    """Idempotency key used when the publisher gave none.

    ``"ca1-" + hex(sha256(json([channel, key, version])))[:32]``: the same object
    version published twice to the same channel is delivered once by Centrifugo
    (within its 5 minute idempotency window), which makes relay retries safe.
    """
    material = _encoder.encode([channel, key, version])
    return "ca1-" + hashlib.sha256(material).hexdigest()[:32]
