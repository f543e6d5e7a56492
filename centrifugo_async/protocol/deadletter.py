"""``DeadLetter``: the record kept for a message the relay could not deliver.

Stored as JSON in the shard's ``dlq`` list. ``payload`` holds the original list
entry verbatim when it is UTF-8 (always, for envelopes written by the publisher);
otherwise ``payload_b64`` holds its base64 form, so nothing is ever lost.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from .._clock import now_ms
from ..exceptions import EnvelopeDecodeError

__all__ = ["DeadLetter", "decode_dead_letter", "encode_dead_letter"]


class DeadLetter(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a message was not delivered, with the message itself."""

    shard: int
    ts: int
    """When it was dead-lettered, milliseconds since the epoch."""
    reason: str
    """``invalid_envelope``, a JSON profile rule (``invalid_unicode``, ``too_deep``,
    ``number_out_of_range``), ``internal`` (an unexpected error while preparing it),
    ``rejected`` (Centrifugo error reply), ``refused`` (HTTP 400/413)."""
    error: str
    code: int | None = None
    """Centrifugo error code or HTTP status, when there is one."""
    channel: str | None = None
    relay: str | None = None
    payload: str | None = None
    payload_b64: str | None = None

    @classmethod
    def for_payload(
        cls,
        raw: bytes,
        *,
        shard: int,
        reason: str,
        error: str,
        code: int | None = None,
        channel: str | None = None,
        relay: str | None = None,
    ) -> DeadLetter:
        """A record for the list entry ``raw``, timestamped now."""
        try:
            text, b64 = raw.decode("utf-8"), None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(raw).decode("ascii")
        return cls(
            shard=shard,
            ts=now_ms(),
            reason=reason,
            error=error,
            code=code,
            channel=channel,
            relay=relay,
            payload=text,
            payload_b64=b64,
        )

    @property
    def original(self) -> bytes:
        """The list entry exactly as it was."""
        if self.payload is not None:
            return self.payload.encode("utf-8")
        try:
            return base64.b64decode(self.payload_b64 or "", validate=True)
        except binascii.Error as exc:
            raise EnvelopeDecodeError(f"dead letter has a corrupt payload_b64: {exc}") from None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """The JSON bytes stored in a ``dlq`` list."""
    return _encoder.encode(letter)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Parse a ``dlq`` list entry; raises ``EnvelopeDecodeError`` if it is not a record."""
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise EnvelopeDecodeError(f"not a dead-letter record: {exc}") from None
