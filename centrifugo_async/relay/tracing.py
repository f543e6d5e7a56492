"""The relay's spans: each request to Centrifugo continues the traces of its messages.

With ``tracing`` on, a batch whose messages carry a ``traceparent`` (written by
``Publisher(..., tracing=True)``) is sent inside a span, and the request
carries that span's ``traceparent`` header, so Centrifugo's own tracing (if
enabled) continues the trace too.

A batch holds messages from many publishes. Its span follows OpenTelemetry's
rule for batches: when every traced message of the batch carries the same
context (one ``publish``, or a ``publish_many`` in one span: the common case),
the span is that context's child and the trace simply goes on; when they
differ, the span starts a trace of its own with a *link* to each message's
context, so that no message's trace is made to own a request that carries
the others. A batch without any traced message gets no span, and a
``traceparent`` that does not parse is ignored (as W3C Trace Context asks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .._version import __version__
from ..tracing import require_opentelemetry
from .api import BatchResult, CentrifugoAPI, Verdict

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

__all__ = ["SPAN_NAME", "BatchTracer"]

SPAN_NAME = "send"
"""As OpenTelemetry's messaging conventions name it: the operation, not the channels."""


class BatchTracer:
    """The relay's spans: one per request to Centrifugo that carries traced messages."""

    def __init__(self) -> None:
        require_opentelemetry("tracing")
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._tracer = trace.get_tracer("centrifugo_async.relay", __version__)

    async def send_batch(
        self,
        api: CentrifugoAPI,
        commands: Sequence[bytes],
        traceparents: Sequence[str | None],
        attributes: Mapping[str, str | int],
    ) -> BatchResult:
        """``api.send_batch(commands)``, in a span continuing the messages' traces."""
        contexts = self._distinct_contexts(traceparents)
        if not contexts:
            return await api.send_batch(commands)
        from opentelemetry.context import Context
        from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, StatusCode

        if len(contexts) == 1:
            parent, links = self._trace.set_span_in_context(NonRecordingSpan(contexts[0])), []
        else:
            parent, links = Context(), [Link(context) for context in contexts]
        span_attributes = {
            "messaging.system": "centrifugo",
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(commands),
            **attributes,
        }
        with self._tracer.start_as_current_span(
            SPAN_NAME,
            context=parent,
            kind=SpanKind.PRODUCER,
            links=links,
            attributes=span_attributes,
        ) as span:
            headers: dict[str, str] = {}
            self._propagator.inject(headers)
            result = await api.send_batch(commands, headers=headers)
            if result.verdict is not Verdict.REPLIES:
                span.set_status(StatusCode.ERROR, result.reason)
            else:
                rejected = sum(not reply.accepted for reply in result.replies)
                if rejected:
                    span.set_attribute("centrifugo_async.rejected", rejected)
                    span.set_status(StatusCode.ERROR, f"{rejected} commands rejected")
        return result

    def _distinct_contexts(self, traceparents: Sequence[str | None]) -> list[SpanContext]:
        """The valid span contexts among ``traceparents``, each once, in order."""
        found: dict[str, SpanContext] = {}
        for traceparent in traceparents:
            if traceparent is None or traceparent in found:
                continue
            extracted = self._propagator.extract({"traceparent": traceparent})
            context = self._trace.get_current_span(extracted).get_span_context()
            if context.is_valid:
                found[traceparent] = context
        return list(found.values())
