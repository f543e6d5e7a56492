"""The relay's own HTTP/1.1 client, against a scripted asyncio server on loopback.

The end-to-end tests exercise it against the real Centrifugo; these cover what
Centrifugo rarely does: chunked bodies, ``Connection: close``, a server that
closes idle connections, truncated replies, timeouts and refused connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from centrifugo_async.relay._http11 import HTTPTransportError, KeepAliveClient
from centrifugo_async.relay.api import CentrifugoAPI, Verdict, publish_command

Reply = Callable[[bytes], bytes | None]
"""Given the request bytes, the raw response to write (None: close without answering)."""


class Server:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.close_after_reply = False
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                response = self.reply(request)
                if response is None:
                    break
                writer.write(response)
                await writer.drain()
                if self.close_after_reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    yield srv
    srv.server.close()


def client(url: str, timeout: float = 2.0) -> KeepAliveClient:
    return KeepAliveClient(url, {"X-API-Key": "secret"}, timeout=timeout, connect_timeout=timeout)


async def test_post_sends_one_request_and_reuses_the_connection(server: Server) -> None:
    http = client(server.url)
    assert await http.post("/batch", b'{"a":1}') == (200, b"ok")
    assert await http.post("/batch", b"{}") == (200, b"ok")
    await http.aclose()
    assert server.connections == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/batch HTTP/1.1\r\n")
    assert b"\r\nX-API-Key: secret" in head
    assert b"\r\nContent-Length: 7" in head
    assert body == b'{"a":1}'


async def test_chunked_body_and_interim_response(server: Server) -> None:
    server.reply = lambda _: (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n"
    )
    http = client(server.url)
    assert await http.post("/x", b"") == (200, b"abcdefg")
    assert await http.post("/x", b"") == (200, b"abcdefg")
    await http.aclose()
    assert server.connections == 1


async def test_connection_close_and_read_until_eof(server: Server) -> None:
    server.reply = lambda _: b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\n\r\nbusy"
    server.close_after_reply = True
    http = client(server.url)
    assert await http.post("/x", b"") == (503, b"busy")
    assert await http.post("/x", b"") == (503, b"busy")
    await http.aclose()
    assert server.connections == 2


async def test_idle_connection_closed_by_the_server_is_not_reused(server: Server) -> None:
    server.close_after_reply = True  # closes after answering, without saying so
    http = client(server.url)
    assert await http.post("/x", b"") == (200, b"ok")
    await asyncio.sleep(0.05)  # the client's event loop sees the EOF
    assert await http.post("/x", b"") == (200, b"ok")
    await http.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    "response",
    [
        None,  # closed without a reply
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # truncated
        b"SMTP ready\r\n\r\n",  # not HTTP
    ],
)
async def test_broken_replies_raise_a_transport_error(
    server: Server, response: bytes | None
) -> None:
    server.reply = lambda _: response
    server.close_after_reply = True
    http = client(server.url)
    with pytest.raises(HTTPTransportError):
        await http.post("/x", b"")
    await http.aclose()


async def test_timeout_and_refused_connection(server: Server) -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    silent = await asyncio.start_server(never, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    http = client(f"http://127.0.0.1:{port}/api", timeout=0.2)
    with pytest.raises(HTTPTransportError, match="no response within"):
        await http.post("/x", b"")
    silent.close()
    await http.aclose()

    server_port = server.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.server.close()  # type: ignore[union-attr]
    await server.server.wait_closed()  # type: ignore[union-attr]
    refused = client(f"http://127.0.0.1:{server_port}/api")
    with pytest.raises(HTTPTransportError):
        await refused.post("/x", b"")


async def test_centrifugo_api_turns_transport_errors_into_retries(server: Server) -> None:
    server.reply = lambda _: None
    api = CentrifugoAPI(server.url, "secret", timeout=1.0)
    result = await api.send_batch([publish_command("obj:1", b"{}", "k", None)])
    assert result.verdict is Verdict.RETRY
    await api.aclose()


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="http://"):
        client("https://127.0.0.1/api")


@pytest.mark.parametrize(
    ("channel", "idempotency_key"),
    [("obj:1", "ca1-0123"), ('weird "channel" é', 'key with "quotes" and \\ é')],
)
def test_publish_command_fast_path_matches_the_struct_encoding(
    channel: str, idempotency_key: str
) -> None:
    envelope = b'{"v":1,"x":"\xc3\xa9"}'
    fast = publish_command(channel, envelope, idempotency_key, None)
    assert msgspec.json.decode(fast) == {
        "publish": {
            "channel": channel,
            "data": {"v": 1, "x": "é"},
            "idempotency_key": idempotency_key,
        }
    }
    with_tags = publish_command(channel, envelope, idempotency_key, {})
    assert fast == with_tags.replace(b',"tags":{}', b"")
