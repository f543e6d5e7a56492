"""Envelopes from the ``data`` of a Centrifugo publication, as a client SDK hands it over."""

from __future__ import annotations

from typing import Any

from ..exceptions import EnvelopeDecodeError
from ..protocol import ijson
from ..protocol.envelope import Envelope, decode_envelope

__all__ = ["envelope_from_data"]


def envelope_from_data(data: Any) -> Envelope[Any]:
    """Decode and validate the envelope carried by a publication's ``data``.

    ``data`` is what the SDK delivers: with the JSON protocol an already decoded
    JSON value (a dict for an envelope), with the Protobuf protocol the raw
    ``bytes``. Bytes are decoded as they are; any other value is encoded back to
    JSON first, so both paths run exactly the checks of ``decode_envelope``
    (a ``str`` is a JSON string value, never envelope text). A decoded value
    can break the JSON profile where bytes could not reach it (a ``float("inf")``
    from ``1e400``, a lone surrogate from ``"\\ud800"``): that is refused with
    the same reason as the bytes would be.

    Raises ``EnvelopeDecodeError`` when ``data`` is not a valid envelope of a
    supported major version.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        return decode_envelope(bytes(data))
    try:
        payload = ijson.encode(data)
    except ijson.Unencodable as exc:
        raise EnvelopeDecodeError(
            f"not a valid envelope: {exc.violation}", reason=exc.violation.rule
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise EnvelopeDecodeError(f"not a valid envelope: not JSON data ({exc})") from None
    return decode_envelope(payload)
