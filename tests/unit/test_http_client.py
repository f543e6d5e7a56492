"""The relay's own HTTP/1.1 client, against the scripted fake Centrifugo on loopback.

The end-to-end tests exercise it against the real Centrifugo; these cover what
Centrifugo rarely does: chunked bodies, ``Connection: close``, a server that
closes idle connections, truncated or malformed replies, timeouts and refused
connections. Every failure must end as ``TransportError`` with its cause, never
as whatever the stream raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from centrifugo_async.relay._http11 import KeepAliveClient
from centrifugo_async.relay._httpx import HttpxTransport
from centrifugo_async.relay.api import (
    CentrifugoAPI,
    RetryCause,
    Verdict,
    open_transport,
    publish_command,
)
from centrifugo_async.relay.transport import Response, TransportCause, TransportError
from tests.support.fake_centrifugo import (
    Accept,
    Behaviour,
    CloseMidBody,
    FakeCentrifugo,
    GarbageStatusLine,
    Hang,
    LongBody,
    LongChunkSizeLine,
    LongHeaderLine,
    Raw,
)

OK = Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
async def server() -> AsyncIterator[FakeCentrifugo]:
    async with FakeCentrifugo(api_key="secret") as fake:
        fake.default = OK
        yield fake


def client(url: str, timeout: float = 2.0, **bounds: int) -> KeepAliveClient:
    return KeepAliveClient(
        url, {"X-API-Key": "secret"}, timeout=timeout, connect_timeout=timeout, **bounds
    )


async def test_post_sends_one_request_and_reuses_the_connection(server: FakeCentrifugo) -> None:
    http = client(server.url)
    assert await http.post("/batch", b'{"a":1}') == Response(200, b"ok")
    assert await http.post("/batch", b"{}") == Response(200, b"ok")
    await http.aclose()
    assert server.connections == 1
    head, body = server.requests[0].head, server.requests[0].body
    assert head.startswith(b"POST /api/batch HTTP/1.1\r\n")
    assert b"\r\nX-API-Key: secret" in head
    assert b"\r\nContent-Length: 7" in head
    assert body == b'{"a":1}'


async def test_chunked_body_and_interim_response(server: FakeCentrifugo) -> None:
    server.default = Raw(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n"
    )
    http = client(server.url)
    assert await http.post("/x", b"") == Response(200, b"abcdefg")
    assert await http.post("/x", b"") == Response(200, b"abcdefg")
    await http.aclose()
    assert server.connections == 1


async def test_chunked_batch_reply_from_the_fake(server: FakeCentrifugo) -> None:
    server.default = Accept(chunked=True)
    http = client(server.url)
    body = b'{"commands":[{"publish":{"channel":"c","data":{}}}],"parallel":false}'
    response = await http.post("/batch", body)
    assert response == Response(200, b'{"replies": [{"publish": {}}]}')
    await http.aclose()


async def test_connection_close_and_read_until_eof(server: FakeCentrifugo) -> None:
    server.default = Raw(b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\n\r\nbusy", close=True)
    http = client(server.url)
    assert await http.post("/x", b"") == Response(503, b"busy")
    assert await http.post("/x", b"") == Response(503, b"busy")
    await http.aclose()
    assert server.connections == 2


async def test_idle_connection_closed_by_the_server_is_not_reused(server: FakeCentrifugo) -> None:
    server.default = Raw(OK.data, close=True)  # closes after answering, without saying so
    http = client(server.url)
    assert await http.post("/x", b"") == Response(200, b"ok")
    await asyncio.sleep(0.05)  # the client's event loop sees the EOF
    assert await http.post("/x", b"") == Response(200, b"ok")
    await http.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    "behaviour",
    [
        Raw(b"", close=True),  # closed without a reply
        Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", close=True),  # truncated
        Raw(b"SMTP ready\r\n\r\n", close=True),  # not HTTP
        CloseMidBody(),
        GarbageStatusLine(),
        GarbageStatusLine(b"HTTP/1.1 999 Beyond\r\n"),
        LongHeaderLine(),
        LongChunkSizeLine(),
    ],
    ids=[
        "no reply",
        "truncated",
        "not http",
        "closed mid-body",
        "garbage status line",
        "status out of range",
        "long header line",
        "long chunk-size line",
    ],
)
async def test_broken_replies_raise_a_network_transport_error(
    server: FakeCentrifugo, behaviour: Behaviour
) -> None:
    server.script(behaviour)
    http = client(server.url)
    with pytest.raises(TransportError) as caught:
        await http.post("/x", b"")
    assert caught.value.cause is TransportCause.NETWORK
    assert caught.value.sent
    assert server.unused == ()
    assert await http.post("/x", b"") == Response(200, b"ok"), "the client recovers"
    await http.aclose()


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_a_body_over_the_limit_is_a_network_error(
    server: FakeCentrifugo, framing: str
) -> None:
    server.script(LongBody(10_000, framing), LongBody(1000, framing))
    http = client(server.url, max_body_bytes=1000)
    with pytest.raises(TransportError, match="response body too large") as caught:
        await http.post("/x", b"")
    assert caught.value.cause is TransportCause.NETWORK
    assert await http.post("/x", b"") == Response(200, b"x" * 1000), "the limit itself is fine"
    assert await http.post("/x", b"") == Response(200, b"ok"), "the client recovers"
    await http.aclose()


async def test_the_httpx_transport_bounds_the_body_too() -> None:
    big = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 5000))
    http = HttpxTransport(
        "https://centrifugo/api", {}, timeout=1, connect_timeout=1, max_body_bytes=1000,
        transport=big,
    )  # fmt: skip
    with pytest.raises(TransportError, match="response body too large") as caught:
        await http.post("/batch", b"{}")
    assert caught.value.cause is TransportCause.NETWORK
    await http.aclose()


async def test_concurrent_posts_share_a_bounded_number_of_connections(
    server: FakeCentrifugo,
) -> None:
    released = asyncio.Event()
    server.default = Hang(released, then=OK)
    http = client(server.url, timeout=10, max_connections=4)
    posts = [asyncio.create_task(http.post("/x", b"")) for _ in range(20)]
    await server.wait_for(lambda: len(server.requests) == 4, within=5)
    released.set()
    assert await asyncio.gather(*posts) == [Response(200, b"ok")] * 20
    await http.aclose()
    assert server.connections == 4


async def test_timeout_and_refused_connection(server: FakeCentrifugo) -> None:
    hang = Hang()
    server.script(hang)
    http = client(server.url, timeout=0.2)
    with pytest.raises(TransportError, match="no response within") as caught:
        await http.post("/x", b"")
    assert caught.value.cause is TransportCause.TIMEOUT
    assert caught.value.sent, "the request left: the server may have acted on it"
    hang.released.set()
    await http.aclose()

    port = server.port
    await server.aclose()
    refused = client(f"http://127.0.0.1:{port}/api")
    with pytest.raises(TransportError) as caught:
        await refused.post("/x", b"")
    assert caught.value.cause is TransportCause.NETWORK
    assert not caught.value.sent, "no connection: the request never left"


async def test_centrifugo_api_turns_transport_errors_into_retries(server: FakeCentrifugo) -> None:
    server.default = Raw(b"", close=True)
    api = CentrifugoAPI(open_transport(server.url, "secret", timeout=1.0))
    result = await api.send_batch([publish_command("obj:1", b"{}", "k", None)])
    assert result.verdict is Verdict.RETRY
    assert result.cause is RetryCause.NETWORK
    await api.aclose()


async def test_centrifugo_api_reports_a_hang_as_a_timeout(server: FakeCentrifugo) -> None:
    server.script(Hang())
    api = CentrifugoAPI(open_transport(server.url, "secret", timeout=0.2))
    result = await api.send_batch([publish_command("obj:1", b"{}", "k", None)])
    assert (result.verdict, result.cause) == (Verdict.RETRY, RetryCause.TIMEOUT)
    await api.aclose()


async def test_open_transport_picks_the_lean_client_for_plain_http_only() -> None:
    lean = open_transport("http://127.0.0.1:8000/api", "k")
    tls = open_transport("https://127.0.0.1:8000/api", "k")
    assert isinstance(lean, KeepAliveClient)
    assert isinstance(tls, HttpxTransport)
    await lean.aclose()
    await tls.aclose()


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
