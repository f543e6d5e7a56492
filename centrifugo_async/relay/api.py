"""Centrifugo's server HTTP API as the relay needs it: ordered batches, every reply checked.

Centrifugo reports most errors inside an HTTP 200 reply, per command. This module
turns a response into a ``BatchResult`` whose classification is the relay's only
input for deciding what to retry, what to dead-letter and when to stop::

    transport error, timeout, HTTP 408/429/5xx ...... retry the batch (backoff)
    HTTP 401/403 .................................... fatal: bad API key
    HTTP 404/405 .................................... fatal: wrong API URL
    HTTP 400/413 .................................... the body was refused: isolate the culprit
    HTTP 200, reply error code 100 (internal) ....... retry that command
    HTTP 200, any other reply error code ............ dead-letter that command

Every retry carries a ``RetryCause``, decided where the failure is seen (the
transport or the classification), never parsed back out of a message.

HTTP itself is behind the ``Transport`` seam (``transport.py``): ``open_transport``
picks the lean keep-alive client for ``http://`` and httpx for ``https://``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence

import attrs
import msgspec

from ..exceptions import CentrifugoAuthError, RelayFatalError
from ._http11 import KeepAliveClient
from ._httpx import HttpxTransport
from .transport import Transport, TransportCause, TransportError

__all__ = [
    "TEMPORARY_ERROR_CODES",
    "BatchResult",
    "CentrifugoAPI",
    "ReplyStatus",
    "RetryCause",
    "Verdict",
    "api_headers",
    "batch_body",
    "classify_response",
    "open_transport",
    "publish_command",
]

TEMPORARY_ERROR_CODES = frozenset({100})
"""Reply error codes worth retrying: only 100 (internal error) is temporary."""


class Verdict(enum.Enum):
    """What the relay should do with a whole batch after one attempt."""

    REPLIES = "replies"
    """Centrifugo answered per command: look at each ``ReplyStatus``."""
    RETRY = "retry"
    """Nothing is known to have been accepted: send the same batch again later."""
    REFUSED = "refused"
    """Centrifugo refused the request body itself (HTTP 400/413)."""


class RetryCause(enum.Enum):
    """Why something had to be sent again. The values are the ``error_class`` metric labels."""

    NETWORK = "network"
    """Refused, reset or closed connection, or a response that is not HTTP."""
    TIMEOUT = "timeout"
    """No response (or no connection) in time."""
    HTTP_5XX = "http_5xx"
    HTTP_429 = "http_429"
    HTTP_OTHER = "http_other"
    """Any other status worth retrying (408, unexpected 2xx/3xx)."""
    BAD_REPLY = "bad_reply"
    """HTTP 200 whose body is not a batch reply for the commands sent."""
    CODE_100 = "code_100"
    """Centrifugo's internal error for a command (the only temporary reply code)."""

    @classmethod
    def for_status(cls, status: int) -> RetryCause:
        if 500 <= status <= 599:
            return cls.HTTP_5XX
        if status == 429:
            return cls.HTTP_429
        return cls.HTTP_OTHER


_TRANSPORT_CAUSES = {
    TransportCause.NETWORK: RetryCause.NETWORK,
    TransportCause.TIMEOUT: RetryCause.TIMEOUT,
}


@attrs.frozen
class ReplyStatus:
    """Centrifugo's answer to one command of a batch."""

    code: int = 0
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.code == 0

    @property
    def temporary(self) -> bool:
        return self.code in TEMPORARY_ERROR_CODES


_ACCEPTED = ReplyStatus()
"""Shared by every accepted reply (frozen), instead of one object per message."""


@attrs.frozen
class BatchResult:
    verdict: Verdict
    replies: tuple[ReplyStatus, ...] = ()
    """One status per command sent, in order (``Verdict.REPLIES`` only)."""
    reason: str = ""
    """What went wrong, for logs and dead letters (``RETRY`` and ``REFUSED``)."""
    cause: RetryCause | None = attrs.field(default=None)
    """Why the batch must be sent again: set with ``Verdict.RETRY``, and only then."""
    unsent: bool = False
    """``RETRY`` only: the request certainly never reached Centrifugo (no connection)."""

    @cause.validator
    def _cause_goes_with_retry(self, _: attrs.Attribute[RetryCause | None], value: object) -> None:
        if (value is None) == (self.verdict is Verdict.RETRY):
            raise ValueError("a BatchResult has a retry cause exactly when its verdict is RETRY")


def api_headers(api_key: str) -> dict[str, str]:
    """The headers of every request to Centrifugo's server API."""
    return {"X-API-Key": api_key, "Content-Type": "application/json"}


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""


class _Reply(msgspec.Struct):
    error: _Error | None = None


class _BatchReply(msgspec.Struct):
    replies: list[_Reply] | None = None
    error: _Error | None = None


class _PublishCommand(msgspec.Struct, omit_defaults=True):
    channel: str
    data: msgspec.Raw
    idempotency_key: str
    tags: dict[str, str] | None = None
    version: int | None = None


class _Command(msgspec.Struct):
    publish: _PublishCommand


_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(_BatchReply)


def publish_command(
    channel: str,
    envelope: bytes,
    idempotency_key: str,
    tags: dict[str, str] | None,
    version: int | None = None,
) -> bytes:
    """One encoded ``{"publish": ...}`` command whose ``data`` is ``envelope`` verbatim.

    ``version`` is Centrifugo's own publication version (channels with history
    skip a publication whose version is not above the last one).
    """
    if tags is None and version is None:
        # The common case, once per message on the hot path: splice the bytes
        # (half the cost of building and encoding the structs; same output).
        return b"".join(
            (
                _command_head(channel),
                envelope,
                b',"idempotency_key":',
                _encoder.encode(idempotency_key),
                b"}}",
            )
        )
    return _encoder.encode(
        _Command(_PublishCommand(channel, msgspec.Raw(envelope), idempotency_key, tags, version))
    )


@functools.lru_cache(maxsize=1024)
def _command_head(channel: str) -> bytes:
    return b'{"publish":{"channel":' + _encoder.encode(channel) + b',"data":'


def batch_body(commands: Sequence[bytes]) -> bytes:
    return b'{"commands":[' + b",".join(commands) + b'],"parallel":false}'


def classify_response(status: int, body: bytes, expected: int) -> BatchResult:
    """Classify one HTTP response to a batch of ``expected`` commands.

    Raises ``RelayFatalError`` for answers that no retry can fix.
    """
    if status in (401, 403):
        raise CentrifugoAuthError(
            f"Centrifugo rejected the API key (HTTP {status}): check --api-key / "
            "CENTRIFUGO_API_KEY against http_api.key in Centrifugo's config"
        )
    if status in (404, 405):
        raise RelayFatalError(
            f"no Centrifugo server API at this URL (HTTP {status}): --api-url must point "
            "at Centrifugo's API prefix, for example http://127.0.0.1:8000/api"
        )
    if status in (400, 413):
        return BatchResult(Verdict.REFUSED, reason=f"HTTP {status}: {_snippet(body)}")
    if status != 200:
        return BatchResult(
            Verdict.RETRY,
            reason=f"HTTP {status}: {_snippet(body)}",
            cause=RetryCause.for_status(status),
        )
    try:
        reply = _reply_decoder.decode(body)
    except msgspec.DecodeError as exc:
        return BatchResult(
            Verdict.RETRY,
            reason=f"unreadable reply ({exc}): {_snippet(body)}",
            cause=RetryCause.BAD_REPLY,
        )
    if reply.error is not None:
        # An error for the whole batch: apply it to every command.
        status_for_all = ReplyStatus(reply.error.code or 100, reply.error.message)
        return BatchResult(Verdict.REPLIES, (status_for_all,) * expected)
    replies = reply.replies or []
    if len(replies) != expected:
        return BatchResult(
            Verdict.RETRY,
            reason=f"{len(replies)} replies for {expected} commands",
            cause=RetryCause.BAD_REPLY,
        )
    return BatchResult(
        Verdict.REPLIES,
        tuple(
            ReplyStatus(r.error.code, r.error.message) if r.error else _ACCEPTED for r in replies
        ),
    )


def _snippet(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"


def open_transport(
    api_url: str, api_key: str, *, timeout: float = 5.0, max_connections: int = 64
) -> Transport:
    """The relay's transport to Centrifugo's API at ``api_url``.

    Plain ``http://`` gets the lean ``KeepAliveClient`` (a tenth of httpx's CPU
    per request, see ``_http11.py``), ``https://`` gets httpx. Connecting may take
    ``min(timeout, 2)`` seconds of the request's ``timeout``.
    """
    headers = api_headers(api_key)
    connect_timeout = min(timeout, 2.0)
    if api_url.startswith("http://"):
        return KeepAliveClient(
            api_url,
            headers,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
        )
    return HttpxTransport(
        api_url,
        headers,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
    )


class CentrifugoAPI:
    """Centrifugo's server API over a ``Transport``, which it owns and closes.

    ``open_transport`` makes the production one; tests pass a transport that
    talks to a fake server or to ``httpx.MockTransport``.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def send_batch(
        self, commands: Sequence[bytes], headers: Mapping[str, str] | None = None
    ) -> BatchResult:
        """POST ``commands`` to ``/batch`` with ``parallel: false`` and classify the answer.

        ``headers`` go with the request (the relay's trace context, when it traces).
        """
        try:
            response = await self._transport.post("/batch", batch_body(commands), headers)
        except TransportError as exc:
            return BatchResult(
                Verdict.RETRY,
                reason=str(exc),
                cause=_TRANSPORT_CAUSES[exc.cause],
                unsent=not exc.sent,
            )
        return classify_response(response.status, response.body, len(commands))

    async def check(self) -> BatchResult:
        """Probe the API with an empty batch: proves the URL and the key before consuming."""
        return await self.send_batch(())

    async def aclose(self) -> None:
        await self._transport.aclose()
