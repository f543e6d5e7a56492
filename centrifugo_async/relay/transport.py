"""The seam between the relay and HTTP: post a body to a path, get a status and bytes back.

``CentrifugoAPI`` needs nothing more from HTTP than this, so everything below it
is replaceable: the lean keep-alive client for ``http://`` (``_http11.py``),
httpx for ``https://`` and for unit tests that inject ``httpx.MockTransport``
(``_httpx.py``), or anything else with the same two methods.

Every implementation reports a failed exchange the same way, with one exception
carrying a structured cause, so the relay never has to read a reason back out
of an error message to decide how to count it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

import attrs

__all__ = ["Response", "Transport", "TransportCause", "TransportError"]


@attrs.frozen
class Response:
    """A complete HTTP response: whatever the status, the body was read to its end."""

    status: int
    body: bytes


class TransportCause(enum.Enum):
    """Why no usable response came back."""

    NETWORK = "network"
    """Refused, reset or closed connection, or a truncated or malformed response."""
    TIMEOUT = "timeout"
    """No complete response (or no connection) within the configured time."""


class TransportError(Exception):
    """The request may or may not have reached the server; no usable response came back.

    The connection it used is closed; the caller decides whether to try again.
    ``sent`` is False only when the request certainly never left (no connection
    could be made): the server cannot have acted on it.
    """

    def __init__(self, cause: TransportCause, detail: str, *, sent: bool = True) -> None:
        super().__init__(detail)
        self.cause = cause
        self.sent = sent


class Transport(Protocol):
    """Posts bodies to one HTTP server (an API prefix such as ``http://host:8000/api``)."""

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        """``POST`` ``body`` to the base URL's path plus ``path``; raises ``TransportError``.

        ``headers`` are sent besides the transport's own (the trace context).
        """
        ...

    async def aclose(self) -> None:
        """Close every connection; the transport is not used afterwards."""
        ...
