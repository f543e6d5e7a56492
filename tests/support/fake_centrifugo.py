"""A scripted fake of Centrifugo's server HTTP API on loopback, for fault tests.

Real Centrifugo cannot be told to fail the next request, hang, or answer with a
broken HTTP response; fault tests need exactly that, while still running the
relay's production code path (the lean HTTP/1.1 client, ``open_transport``).
This server speaks as much of the API as the relay uses: ``POST /api/batch``
with ``{"commands": [{"publish": {...}}, ...], "parallel": false}``, the empty
batch the relay probes with, and the ``X-API-Key`` check. Each batch is answered
by the next scripted ``Behaviour``::

    async with FakeCentrifugo() as fake:
        fake.script(Status(503), Hang(), ReplyErrors({0: 100}))
        ...  # run the relay with api_url=fake.url, api_key=fake.api_key
        assert [len(r.commands) for r in fake.batches] == [...]

Requests other than probes take the next behaviour of the script, in arrival
order; once it is used up, ``fake.default`` answers (``Accept()`` unless
replaced). Probes (empty batches) are answered by ``fake.probe`` and requests
with a wrong API key get HTTP 401, neither consuming the script. Every request
is recorded in ``fake.requests``; the publish commands answered as accepted in
``fake.accepted``.

A new fault is a small frozen class with ``async def respond(self, exchange)``.

Bounds: request heads up to 64 KiB and bodies up to 16 MiB (else HTTP 431/413
and the connection is closed); closing the fake ends hung exchanges and
closes every connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import json
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol

import attrs

__all__ = [
    "Accept",
    "BatchError",
    "Behaviour",
    "CloseMidBody",
    "Decide",
    "Drop",
    "Exchange",
    "FakeCentrifugo",
    "GarbageStatusLine",
    "Hang",
    "LongBody",
    "LongChunkSizeLine",
    "LongHeaderLine",
    "Raw",
    "ReplyErrors",
    "Request",
    "Status",
]

API_PREFIX = "/api"
BATCH_PATH = f"{API_PREFIX}/batch"
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
CLOSE_TIMEOUT = 5.0


@attrs.frozen
class Request:
    """One request as the fake received it."""

    head: bytes
    """The request line and header lines exactly as received."""
    method: str
    path: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    is_batch: bool
    """The body is a JSON object with a ``commands`` list."""
    commands: tuple[dict[str, Any], ...]
    """The batch's commands as decoded JSON (``()`` when not a batch)."""

    @property
    def publications(self) -> list[dict[str, Any]]:
        """The ``publish`` objects of the batch, in order."""
        return [c["publish"] for c in self.commands if isinstance(c.get("publish"), dict)]

    @property
    def is_probe(self) -> bool:
        """An empty batch: how the relay checks the URL and the key."""
        return self.path == BATCH_PATH and self.is_batch and not self.commands


class Exchange:
    """One request being answered: what a behaviour reads, and how it writes."""

    def __init__(
        self, fake: FakeCentrifugo, request: Request, writer: asyncio.StreamWriter
    ) -> None:
        self.fake = fake
        self.request = request
        self._writer = writer
        self.keep_alive = True
        """False once a behaviour dropped the connection."""

    async def write(self, data: bytes) -> None:
        """Raw bytes on the connection, whatever they are."""
        self._writer.write(data)
        await self._writer.drain()

    def drop(self) -> None:
        """Close the connection once the behaviour returns (no further requests on it)."""
        self.keep_alive = False

    async def reply(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        chunked: bool = False,
    ) -> None:
        """A well-formed HTTP/1.1 response, with ``Content-Length`` or chunked."""
        head = f"HTTP/1.1 {status} {_phrase(status)}\r\nContent-Type: {content_type}\r\n"
        if not chunked:
            await self.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            return
        third = max(1, len(body) // 3)
        pieces = [body[i : i + third] for i in range(0, len(body), third)]
        chunks = b"".join(
            b"%x%s\r\n%s\r\n" % (len(piece), b";ext=1" if n == 0 else b"", piece)
            for n, piece in enumerate(pieces)
        )
        await self.write(
            f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"
        )

    async def reply_json(self, value: object, status: int = 200, *, chunked: bool = False) -> None:
        await self.reply(status, json.dumps(value).encode(), chunked=chunked)

    async def until(self, event: asyncio.Event) -> bool:
        """Wait until ``event`` is set or the fake is closing; True for the event."""
        closing = asyncio.ensure_future(self.fake.closing.wait())
        released = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((closing, released), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            released.cancel()
        return event.is_set()

    def accept(self, publications: Iterable[dict[str, Any]]) -> None:
        """Record publish commands as accepted (``fake.accepted``)."""
        self.fake.accepted.extend(publications)


class Behaviour(Protocol):
    """How the fake answers one request."""

    async def respond(self, exchange: Exchange) -> None: ...


@attrs.frozen
class Accept:
    """What Centrifugo does when all is well: every command accepted (HTTP 404 off the API)."""

    chunked: bool = False

    async def respond(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.path != BATCH_PATH or not request.is_batch:
            await exchange.reply(404, b"404 page not found", content_type="text/plain")
            return
        exchange.accept(request.publications)
        replies: list[dict[str, object]] = [
            {next(iter(c), "publish"): {}} for c in request.commands
        ]
        await exchange.reply_json({"replies": replies}, chunked=self.chunked)


@attrs.frozen
class Status:
    """A bare HTTP status with a short text body (5xx, 429, 413, 401, ...)."""

    code: int
    body: bytes = b"unavailable"

    async def respond(self, exchange: Exchange) -> None:
        await exchange.reply(self.code, self.body, content_type="text/plain")


@attrs.frozen
class ReplyErrors:
    """HTTP 200 with an error reply for chosen commands (index: code); the rest accepted."""

    errors: Mapping[int, int]

    async def respond(self, exchange: Exchange) -> None:
        commands = exchange.request.commands
        replies: list[dict[str, object]] = []
        for index, command in enumerate(commands):
            code = self.errors.get(index)
            if code is None:
                exchange.accept([command["publish"]] if "publish" in command else [])
                replies.append({"publish": {}})
            else:
                replies.append({"error": {"code": code, "message": f"error {code}"}})
        await exchange.reply_json({"replies": replies})


@attrs.frozen
class BatchError:
    """HTTP 200 with one error for the whole batch (nothing accepted)."""

    code: int
    message: str = "batch error"

    async def respond(self, exchange: Exchange) -> None:
        await exchange.reply_json({"error": {"code": self.code, "message": self.message}})


@attrs.frozen
class Hang:
    """No answer until ``released`` is set; then ``then`` answers (default: drop the connection).

    A hang that is never released ends when the fake closes.
    """

    released: asyncio.Event = attrs.field(factory=asyncio.Event, eq=False)
    then: Behaviour | None = None

    async def respond(self, exchange: Exchange) -> None:
        if await exchange.until(self.released) and self.then is not None:
            await self.then.respond(exchange)
        else:
            exchange.drop()


@attrs.frozen
class Drop:
    """Close the connection without answering (a crash or a reset proxy)."""

    async def respond(self, exchange: Exchange) -> None:
        exchange.drop()


@attrs.frozen
class CloseMidBody:
    """Announce a body, send part of it, close the connection."""

    announced: int = 100
    sent: bytes = b'{"replies":['

    async def respond(self, exchange: Exchange) -> None:
        await exchange.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (self.announced, self.sent)
        )
        exchange.drop()


@attrs.frozen
class GarbageStatusLine:
    """A status line that is not HTTP/1.x, then the connection closes."""

    line: bytes = b"HTTP/1.1 2xx FINE\r\n"

    async def respond(self, exchange: Exchange) -> None:
        await exchange.write(self.line + b"Content-Length: 0\r\n\r\n")
        exchange.drop()


@attrs.frozen
class LongHeaderLine:
    """A response header line longer than any sane client buffers (``size`` bytes)."""

    size: int = 128 * 1024

    async def respond(self, exchange: Exchange) -> None:
        padding = b"x" * self.size
        await exchange.write(
            b"HTTP/1.1 200 OK\r\nX-Padding: " + padding + b"\r\nContent-Length: 0\r\n\r\n"
        )
        exchange.drop()


@attrs.frozen
class LongChunkSizeLine:
    """A chunked response whose chunk-size line never ends (``size`` bytes of zeros)."""

    size: int = 128 * 1024

    async def respond(self, exchange: Exchange) -> None:
        await exchange.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * self.size
        )
        exchange.drop()


@attrs.frozen
class LongBody:
    """A 200 whose body is ``size`` bytes, framed by ``framing``: ``"length"``
    (Content-Length), ``"chunked"`` (4 KiB chunks) or ``"close"`` (read until the
    connection closes, which it then does)."""

    size: int = 2 * 1024 * 1024
    framing: str = "length"

    async def respond(self, exchange: Exchange) -> None:
        body = b"x" * self.size
        if self.framing == "length":
            await exchange.reply(200, body, content_type="text/plain")
        elif self.framing == "chunked":
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
                for i in range(0, len(body), 4096)
            )
            await exchange.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
            )
        else:
            await exchange.write(b"HTTP/1.0 200 OK\r\n\r\n" + body)
            exchange.drop()


@attrs.frozen
class Raw:
    """Exactly these bytes as the response; ``close`` drops the connection afterwards."""

    data: bytes
    close: bool = False

    async def respond(self, exchange: Exchange) -> None:
        await exchange.write(self.data)
        if self.close:
            exchange.drop()


@attrs.frozen
class Decide:
    """Choose the behaviour from the request (for instance, refuse one command's batches)."""

    choose: Callable[[Request], Behaviour]

    async def respond(self, exchange: Exchange) -> None:
        await self.choose(exchange.request).respond(exchange)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FakeCentrifugo:
    """The fake server on ``127.0.0.1`` (a free port); an async context manager."""

    def __init__(self, *, api_key: str | None = "fake-key") -> None:
        self.api_key = api_key
        """Requests must carry it as ``X-API-Key`` (None: no check)."""
        self.default: Behaviour = Accept()
        """Answers requests once the script is used up."""
        self.probe: Behaviour = Accept()
        """Answers the relay's probes (empty batches)."""
        self.requests: list[Request] = []
        self.accepted: list[dict[str, Any]] = []
        """Publish commands answered as accepted, in order."""
        self.connections = 0
        self.closing = asyncio.Event()
        """Set by ``aclose``: waiting behaviours give up and connections close."""
        self._script: collections.deque[Behaviour] = collections.deque()
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Centrifugo's API prefix on this fake, for ``api_url``."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def batches(self) -> list[Request]:
        """Requests that carried at least one command."""
        return [r for r in self.requests if r.commands]

    @property
    def unused(self) -> tuple[Behaviour, ...]:
        """Scripted behaviours no request has consumed yet."""
        return tuple(self._script)

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests (after those already queued)."""
        self._script.extend(behaviours)

    async def wait_for(self, condition: Callable[[], bool], within: float) -> None:
        """Wait until ``condition()`` holds, checking after every request and answer."""
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> FakeCentrifugo:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
        return self

    async def aclose(self) -> None:
        """Stop listening, end hung exchanges, close every connection and wait for them."""
        if self._server is None:
            return
        self.closing.set()
        self._server.close()
        for writer in self._open.values():
            writer.close()
        handlers = list(self._open)
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=CLOSE_TIMEOUT)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeCentrifugo:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _behaviour_for(self, request: Request) -> Behaviour:
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return Status(401, b"Unauthorized")
        if request.is_probe:
            return self.probe
        return self._script.popleft() if self._script else self.default

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        self.connections += 1
        try:
            while not self.closing.is_set():
                try:
                    request = await _read_request(reader)
                except _BadRequest as exc:
                    writer.write(
                        b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        % (exc.status, _phrase(exc.status).encode())
                    )
                    break
                if request is None:
                    break
                self.requests.append(request)
                self._changed.set()
                exchange = Exchange(self, request, writer)
                await self._behaviour_for(request).respond(exchange)
                self._changed.set()
                if not exchange.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            del self._open[task]


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection; None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, "request head too large") from None
    request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, f"bad request line {request_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise _BadRequest(400, f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _BadRequest(501, "request bodies must have a Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest(400, "bad Content-Length") from None
    if not 0 <= length <= MAX_BODY_BYTES:
        raise _BadRequest(413, "request body too large")
    body = await reader.readexactly(length)
    is_batch, commands = _decode_batch(body)
    return Request(head, parts[0], parts[1], headers, body, is_batch, commands)


def _decode_batch(body: bytes) -> tuple[bool, tuple[dict[str, Any], ...]]:
    try:
        decoded = json.loads(body)
    except ValueError:
        return False, ()
    if not isinstance(decoded, dict) or not isinstance(decoded.get("commands"), list):
        return False, ()
    return True, tuple(c for c in decoded["commands"] if isinstance(c, dict))


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
