"""Classification of Centrifugo's answers (httpx.MockTransport stands in for the server).

The API layer sees HTTP only through the ``Transport`` seam; here that is the
httpx transport over ``httpx.MockTransport``. The relay's own client against a
scripted server is covered in ``test_http_client.py`` and the integration tests.
"""

from __future__ import annotations

import json

import httpx
import pytest

from centrifugo_async import CentrifugoAuthError, RelayFatalError
from centrifugo_async.relay._httpx import HttpxTransport
from centrifugo_async.relay.api import (
    BatchResult,
    CentrifugoAPI,
    ReplyStatus,
    RetryCause,
    Verdict,
    api_headers,
    batch_body,
    publish_command,
)

COMMANDS = [
    publish_command("obj:1", b'{"v":1,"x":"\xc3\xa9"}', "idem-1", None),
    publish_command("obj:2", b'{"v":1}', "idem-2", {"kind": "update"}),
]


def mocked_api(mock: httpx.MockTransport, api_key: str = "secret") -> CentrifugoAPI:
    return CentrifugoAPI(
        HttpxTransport(
            "http://centrifugo.test/api",
            api_headers(api_key),
            timeout=5.0,
            connect_timeout=2.0,
            transport=mock,
        )
    )


def api_answering(
    status: int, body: bytes | str, seen: list[httpx.Request] | None = None
) -> CentrifugoAPI:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        content = body.encode() if isinstance(body, str) else body
        return httpx.Response(status, content=content)

    return mocked_api(httpx.MockTransport(handler))


async def test_batch_request_is_ordered_and_passes_envelopes_through() -> None:
    seen: list[httpx.Request] = []
    api = api_answering(200, '{"replies":[{"publish":{}},{"publish":{}}]}', seen)
    result = await api.send_batch(COMMANDS)
    assert result.verdict is Verdict.REPLIES
    assert all(r.accepted for r in result.replies)
    (request,) = seen
    assert request.url.path == "/api/batch"
    assert request.headers["X-API-Key"] == "secret"
    body = json.loads(request.content)
    assert body["parallel"] is False
    assert body["commands"][0]["publish"] == {
        "channel": "obj:1",
        "data": {"v": 1, "x": "é"},
        "idempotency_key": "idem-1",
    }
    assert body["commands"][1]["publish"]["tags"] == {"kind": "update"}
    assert "traceparent" not in request.headers


async def test_a_request_carries_the_headers_it_is_given() -> None:
    seen: list[httpx.Request] = []
    api = api_answering(200, '{"replies":[{"publish":{}},{"publish":{}}]}', seen)
    await api.send_batch(COMMANDS, headers={"traceparent": "00-ab-cd-01"})
    (request,) = seen
    assert request.headers["traceparent"] == "00-ab-cd-01"
    assert request.headers["X-API-Key"] == "secret"


async def test_every_reply_is_checked() -> None:
    body = '{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}}]}'
    result = await api_answering(200, body).send_batch(COMMANDS)
    assert result.replies == (ReplyStatus(), ReplyStatus(102, "unknown channel"))
    assert not result.replies[1].accepted and not result.replies[1].temporary


async def test_internal_error_code_100_is_temporary() -> None:
    body = '{"replies":[{"error":{"code":100,"message":"internal error"}},{"publish":{}}]}'
    result = await api_answering(200, body).send_batch(COMMANDS)
    assert result.replies[0].temporary


async def test_error_for_the_whole_batch_applies_to_every_command() -> None:
    result = await api_answering(200, '{"error":{"code":107,"message":"bad request"}}').send_batch(
        COMMANDS
    )
    assert result.replies == (ReplyStatus(107, "bad request"),) * 2


@pytest.mark.parametrize("status", [401, 403])
async def test_bad_api_key_is_fatal(status: int) -> None:
    with pytest.raises(CentrifugoAuthError, match="API key"):
        await api_answering(status, "").send_batch(COMMANDS)


@pytest.mark.parametrize("status", [404, 405])
async def test_wrong_url_is_fatal(status: int) -> None:
    with pytest.raises(RelayFatalError, match="--api-url"):
        await api_answering(status, "404 page not found").send_batch(COMMANDS)


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (500, RetryCause.HTTP_5XX),
        (502, RetryCause.HTTP_5XX),
        (503, RetryCause.HTTP_5XX),
        (504, RetryCause.HTTP_5XX),
        (429, RetryCause.HTTP_429),
        (408, RetryCause.HTTP_OTHER),
    ],
)
async def test_server_errors_are_retried(status: int, cause: RetryCause) -> None:
    result = await api_answering(status, "oops").send_batch(COMMANDS)
    assert result.verdict is Verdict.RETRY
    assert f"HTTP {status}" in result.reason
    assert result.cause is cause


async def test_the_cause_comes_from_the_status_not_the_message() -> None:
    result = await api_answering(503, "upstream timeout").send_batch(COMMANDS)
    assert result.cause is RetryCause.HTTP_5XX


@pytest.mark.parametrize("status", [400, 413])
async def test_refused_bodies_are_reported_for_isolation(status: int) -> None:
    result = await api_answering(status, "Bad Request").send_batch(COMMANDS)
    assert result.verdict is Verdict.REFUSED


@pytest.mark.parametrize(
    "body",
    ['{"replies":[{"publish":{}}]}', "not json", '{"replies":"x"}'],
    ids=["reply count mismatch", "not json", "wrong shape"],
)
async def test_unexpected_replies_are_retried(body: str) -> None:
    result = await api_answering(200, body).send_batch(COMMANDS)
    assert result.verdict is Verdict.RETRY
    assert result.cause is RetryCause.BAD_REPLY


@pytest.mark.parametrize(
    ("error", "cause", "unsent"),
    [
        (httpx.ConnectError("refused"), RetryCause.NETWORK, True),
        (httpx.ReadTimeout("slow"), RetryCause.TIMEOUT, False),
        (httpx.ConnectTimeout("slow"), RetryCause.TIMEOUT, True),
        (httpx.RemoteProtocolError("eof"), RetryCause.NETWORK, False),
    ],
)
async def test_network_errors_and_timeouts_are_retried(
    error: Exception, cause: RetryCause, unsent: bool
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    api = mocked_api(httpx.MockTransport(handler), api_key="k")
    result = await api.send_batch(COMMANDS)
    assert result.verdict is Verdict.RETRY
    assert type(error).__name__ in result.reason
    assert result.cause is cause
    assert result.unsent is unsent, "unsent only when no connection was made"


def test_a_retry_always_has_a_cause_and_only_a_retry() -> None:
    with pytest.raises(ValueError, match="retry cause"):
        BatchResult(Verdict.RETRY, reason="why?")
    with pytest.raises(ValueError, match="retry cause"):
        BatchResult(Verdict.REFUSED, cause=RetryCause.NETWORK)


def test_batch_body_shape() -> None:
    assert json.loads(batch_body([])) == {"commands": [], "parallel": False}
