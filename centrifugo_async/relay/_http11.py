"""A small HTTP/1.1 keep-alive client: POST a body to one server, get ``(status, body)``.

Why the relay does not use httpx for its own requests: measured on the benchmark
machine (``docs/performance.md``), one httpx request costs 0.7-1 ms of CPU (the
httpcore, h11 and anyio layers, two ``send()`` calls per request, and a failed
``import sniffio`` on every request when that package is absent); this client
costs about 0.06 ms. When traffic is light the relay sends one request per
message, so that cost *is* its CPU budget and, once the event loop saturates,
its latency. httpx stays for ``https://`` URLs (``_httpx.py``).

Scope: plain ``http://``, ``POST`` only, responses with ``Content-Length``,
chunked encoding or read-until-close. One request per connection at a time;
idle connections are kept for reuse. Every failure raises ``TransportError``
and closes the connection: cause ``TIMEOUT`` when the response (or the
connection) took longer than allowed, ``NETWORK`` for everything else (refused,
reset, closed mid-response, a status line or header that is not HTTP/1.x or is
too long, a body over ``max_body_bytes``); the caller decides whether to retry.

Bounds: at most ``max_connections`` connections are open at once (a request
beyond that waits for one, within its timeout), and a response body is read
only up to ``max_body_bytes``, so neither a burst of shards nor a server gone
wrong can exhaust the relay's sockets or memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from urllib.parse import urlsplit

from .transport import Response, TransportCause, TransportError

__all__ = ["MAX_BODY_BYTES", "MAX_CONNECTIONS", "KeepAliveClient"]

_MAX_HEADER_BYTES = 64 * 1024

MAX_BODY_BYTES = 1 << 20
"""Largest response body read (a reply to 4,000 commands is well under 100 KiB)."""

MAX_CONNECTIONS = 64
"""Most connections open at once, by default."""

_READ_SIZE = 64 * 1024

_BROKEN_EXCHANGE = (
    OSError,  # refused, reset, unreachable (ConnectionError and socket errors)
    EOFError,  # asyncio.IncompleteReadError: closed before the response ended
    ValueError,  # not HTTP/1.x: status line, header or chunk size that does not parse
    asyncio.LimitOverrunError,  # a header or chunk-size line longer than the stream limit
)


class _ConnectTimeout(Exception):
    pass


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class KeepAliveClient:
    """POST to one ``http://host:port`` server over a pool of keep-alive connections."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int = MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"KeepAliveClient needs an http:// URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        host_header = parts.netloc.rpartition("@")[2]
        fixed = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._fixed_headers = f"Host: {host_header}\r\n{fixed}".encode("latin-1")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_body_bytes = max_body_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        """``POST base_path + path`` with ``body`` (and ``headers``); raises ``TransportError``."""
        extra = b""
        if headers:
            extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode(
                "latin-1"
            )
        request = b"".join(
            (
                f"POST {self.base_path}{path} HTTP/1.1\r\n".encode("latin-1"),
                self._fixed_headers,
                extra,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        connection: _Connection | None = None
        sent = False
        try:
            async with asyncio.timeout(self.timeout), self._slots:
                connection = self._take_idle() or await self._connect()
                reader, writer = connection
                sent = True
                writer.write(request)
                status, body, keep_alive = await _read_response(reader, self.max_body_bytes)
                if keep_alive and not self._closed:
                    self._idle.append(connection)
                else:
                    _close(connection)
        except TimeoutError as exc:
            if connection is not None:
                _close(connection)
            detail = f"TimeoutError: no response within {self.timeout}s"
            raise TransportError(TransportCause.TIMEOUT, detail, sent=sent) from exc
        except _ConnectTimeout as exc:
            raise TransportError(TransportCause.TIMEOUT, str(exc), sent=False) from None
        except _BROKEN_EXCHANGE as exc:
            if connection is not None:
                _close(connection)
            detail = f"{type(exc).__name__}: {str(exc) or type(exc).__name__}"
            raise TransportError(TransportCause.NETWORK, detail, sent=sent) from exc
        except BaseException:
            # Cancelled mid-request: the connection's state is unknown, drop it.
            if connection is not None:
                _close(connection)
            raise
        return Response(status, body)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            reader, writer = self._idle.pop()
            # The server may have closed it while idle (the event loop saw the EOF).
            if reader.at_eof() or writer.is_closing():
                _close((reader, writer))
                continue
            return reader, writer
        return None

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise _ConnectTimeout(
                f"TimeoutError: connect to {self.host}:{self.port} took over "
                f"{self.connect_timeout}s"
            ) from None

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)


async def _read_response(reader: asyncio.StreamReader, limit: int) -> tuple[int, bytes, bool]:
    """Status, body (at most ``limit`` bytes) and whether the connection may be reused."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ValueError("response headers too large") from None
        if len(head) > _MAX_HEADER_BYTES:
            raise ValueError("response headers too large")
        status_line, _, header_block = head.partition(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x response: {status_line[:80]!r}")
        status = int(rest[:3])
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status_line[:80]!r}")
        if status >= 200 or status == 101:
            break  # skip 1xx interim responses (100 Continue)
    length: int | None = None
    chunked = False
    keep_alive = version == b"HTTP/1.1"
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    if status in (204, 304):
        return status, b"", keep_alive
    if chunked:
        return status, await _read_chunked(reader, limit), keep_alive
    if length is not None:
        if not 0 <= length <= limit:
            raise ValueError(_too_large(f"a Content-Length of {length}", limit))
        return status, await reader.readexactly(length), keep_alive
    return status, await _read_until_close(reader, limit), False


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers (usually none) end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > limit:
            raise ValueError(_too_large(f"chunks of {total} bytes", limit))
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_until_close(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while chunk := await reader.read(_READ_SIZE):
        total += len(chunk)
        if total > limit:
            raise ValueError(_too_large(f"over {limit} bytes before the end", limit))
        parts.append(chunk)
    return b"".join(parts)


def _too_large(what: str, limit: int) -> str:
    return f"response body too large: {what} (the limit is {limit} bytes)"


def _close(connection: _Connection) -> None:
    with contextlib.suppress(Exception):
        connection[1].close()
