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
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence

import attrs
import httpx
import msgspec

from ..exceptions import CentrifugoAuthError, RelayFatalError
from ._http11 import HTTPTransportError, KeepAliveClient

__all__ = [
    "TEMPORARY_ERROR_CODES",
    "BatchResult",
    "CentrifugoAPI",
    "ReplyStatus",
    "Verdict",
    "classify_response",
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
    reason: str = ""


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
        return BatchResult(Verdict.RETRY, reason=f"HTTP {status}: {_snippet(body)}")
    try:
        reply = _reply_decoder.decode(body)
    except msgspec.DecodeError as exc:
        return BatchResult(Verdict.RETRY, reason=f"unreadable reply ({exc}): {_snippet(body)}")
    if reply.error is not None:
        # An error for the whole batch: apply it to every command.
        status_for_all = ReplyStatus(reply.error.code or 100, reply.error.message)
        return BatchResult(Verdict.REPLIES, (status_for_all,) * expected)
    replies = reply.replies or []
    if len(replies) != expected:
        return BatchResult(Verdict.RETRY, reason=f"{len(replies)} replies for {expected} commands")
    return BatchResult(
        Verdict.REPLIES,
        tuple(
            ReplyStatus(r.error.code, r.error.message) if r.error else _ACCEPTED for r in replies
        ),
    )


def _snippet(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip() or "(empty body)"


class CentrifugoAPI:
    """A keep-alive HTTP client for one Centrifugo server API.

    Plain ``http://`` URLs use the relay's own ``KeepAliveClient`` (a tenth of
    httpx's CPU per request, see ``http.py``); ``https://`` URLs and an injected
    ``transport`` (tests) go through httpx. Both feed ``classify_response``.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
        self._lean: KeepAliveClient | None = None
        self._client: httpx.AsyncClient | None = None
        if transport is None and self.api_url.startswith("http://"):
            self._lean = KeepAliveClient(
                self.api_url,
                headers,
                timeout=timeout,
                connect_timeout=min(timeout, 2.0),
                max_idle=max_connections,
            )
        else:
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
                transport=transport,
            )

    async def send_batch(self, commands: Sequence[bytes]) -> BatchResult:
        """POST ``commands`` to ``/batch`` with ``parallel: false`` and classify the answer."""
        body = batch_body(commands)
        if self._lean is not None:
            try:
                status, content = await self._lean.post("/batch", body)
            except HTTPTransportError as exc:
                return BatchResult(Verdict.RETRY, reason=str(exc))
            return classify_response(status, content, len(commands))
        assert self._client is not None
        try:
            response = await self._client.post(f"{self.api_url}/batch", content=body)
        except httpx.TransportError as exc:
            return BatchResult(Verdict.RETRY, reason=f"{type(exc).__name__}: {exc}".rstrip(": "))
        return classify_response(response.status_code, response.content, len(commands))

    async def check(self) -> BatchResult:
        """Probe the API with an empty batch: proves the URL and the key before consuming."""
        return await self.send_batch(())

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.aclose()
        if self._client is not None:
            await self._client.aclose()
