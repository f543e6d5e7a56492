"""OpenTelemetry: the trace context a publish writes, and the relay's span per request.

The relay's requests go to the scripted fake Centrifugo through the relay's own
HTTP client, so the ``traceparent`` header is checked on the wire; the SDK's
in-memory exporter shows the spans. The whole path over real Redis and
Centrifugo is in ``tests/integration/test_tracing.py``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from centrifugo_async import InvalidSetting, Message, Publisher
from centrifugo_async.protocol.keys import Keyspace
from centrifugo_async.publisher._plan import plan
from centrifugo_async.relay import RelaySettings
from centrifugo_async.relay.api import CentrifugoAPI, Verdict, open_transport, publish_command
from centrifugo_async.relay.tracing import SPAN_NAME, BatchTracer
from centrifugo_async.tracing import current_traceparent
from tests.support.fake_centrifugo import FakeCentrifugo, ReplyErrors, Status
from tests.support.tracing import exported_spans, spans_named, traceparent_of

__all__ = ["exported_spans"]  # the fixture, used by name

tracer = trace.get_tracer("tests.tracing")
COMMANDS = [publish_command("obj:1", b"{}", f"idem-{i}", None) for i in range(3)]
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
async def fake() -> AsyncIterator[FakeCentrifugo]:
    async with FakeCentrifugo(api_key="secret") as server:
        yield server


@pytest.fixture
async def api(fake: FakeCentrifugo) -> AsyncIterator[CentrifugoAPI]:
    api = CentrifugoAPI(open_transport(fake.url, "secret", timeout=2.0))
    yield api
    await api.aclose()


def publishing_span(name: str = "place order") -> str:
    """The traceparent of a span that has ended, as a publish inside it wrote it."""
    with tracer.start_as_current_span(name):
        traceparent = current_traceparent()
    assert traceparent is not None
    return traceparent


def test_the_current_span_is_written_as_a_w3c_traceparent(
    exported_spans: InMemorySpanExporter,
) -> None:
    assert current_traceparent() is None
    with tracer.start_as_current_span("request") as span:
        assert current_traceparent() == traceparent_of(span)
        message = Message("obj:1", {"x": 1}, "k", 1)
        (call,) = plan([message, message], Keyspace(shards=4), 4096, traceparent="tp").calls
    assert [draft.traceparent for draft in call.drafts] == ["tp", "tp"]
    assert call.args[2].endswith(b',"traceparent":"tp"}')


async def test_one_context_per_batch_continues_that_trace(
    exported_spans: InMemorySpanExporter, api: CentrifugoAPI, fake: FakeCentrifugo
) -> None:
    traceparent = publishing_span()
    (publish,) = exported_spans.get_finished_spans()
    result = await BatchTracer().send_batch(
        api, COMMANDS, [traceparent, None, traceparent], {"centrifugo_async.shard": 2}
    )
    assert result.verdict is Verdict.REPLIES
    (send,) = spans_named(exported_spans, SPAN_NAME)
    assert send.parent is not None and send.parent.span_id == publish.context.span_id
    assert send.context.trace_id == publish.context.trace_id
    assert send.kind is SpanKind.PRODUCER and send.links == ()
    assert send.attributes is not None
    assert send.attributes["messaging.batch.message_count"] == 3
    assert send.attributes["centrifugo_async.shard"] == 2
    assert send.status.status_code is StatusCode.UNSET
    (request,) = fake.batches
    assert request.headers["traceparent"] == traceparent_of(send)


async def test_a_batch_of_several_traces_links_to_each(
    exported_spans: InMemorySpanExporter, api: CentrifugoAPI, fake: FakeCentrifugo
) -> None:
    first, second = publishing_span("first"), publishing_span("second")
    await BatchTracer().send_batch(api, COMMANDS, [first, second, first], {})
    (send,) = spans_named(exported_spans, SPAN_NAME)
    publishes = {s.context.trace_id for s in exported_spans.get_finished_spans() if s != send}
    assert send.parent is None and send.context.trace_id not in publishes
    assert [traceparent_of(link.context) for link in send.links] == [first, second]
    assert fake.batches[0].headers["traceparent"] == traceparent_of(send)


async def test_untraced_or_unreadable_contexts_get_no_span(
    exported_spans: InMemorySpanExporter, api: CentrifugoAPI, fake: FakeCentrifugo
) -> None:
    await BatchTracer().send_batch(api, COMMANDS, [None, "00-not-a-trace-context-01", ""], {})
    assert exported_spans.get_finished_spans() == ()
    assert "traceparent" not in fake.batches[0].headers


async def test_an_unsampled_trace_stays_unsampled_but_is_passed_on(
    exported_spans: InMemorySpanExporter, api: CentrifugoAPI, fake: FakeCentrifugo
) -> None:
    await BatchTracer().send_batch(api, COMMANDS, [UNSAMPLED], {})
    assert exported_spans.get_finished_spans() == ()
    sent = fake.batches[0].headers["traceparent"]
    assert sent.startswith("00-0af7651916cd43dd8448eb211c80319c-") and sent.endswith("-00")


async def test_failed_and_rejected_requests_mark_the_span(
    exported_spans: InMemorySpanExporter, api: CentrifugoAPI, fake: FakeCentrifugo
) -> None:
    traceparent = publishing_span()
    fake.script(Status(503), ReplyErrors({1: 102}))
    retry = await BatchTracer().send_batch(api, COMMANDS, [traceparent], {})
    replies = await BatchTracer().send_batch(api, COMMANDS, [traceparent], {})
    assert (retry.verdict, replies.verdict) == (Verdict.RETRY, Verdict.REPLIES)
    failed, rejected = spans_named(exported_spans, SPAN_NAME)
    assert failed.status.status_code is StatusCode.ERROR
    assert "HTTP 503" in (failed.status.description or "")
    assert rejected.status.status_code is StatusCode.ERROR
    assert rejected.attributes is not None and rejected.attributes["centrifugo_async.rejected"] == 1


def test_tracing_without_opentelemetry_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with pytest.raises(ImportError, match=r"tracing=True\) needs OpenTelemetry: pip install"):
        Publisher(None, tracing=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match=r"tracing needs OpenTelemetry: .*\[otel\]"):
        RelaySettings(api_key="k", tracing=True)
    assert RelaySettings(api_key="k").tracing is False
    Publisher(None)  # type: ignore[arg-type]
