"""OpenTelemetry's SDK with an in-memory exporter, for the tracing tests.

The global tracer provider can be set once per process, so every test that
looks at spans shares one provider and clears its exporter before and after.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["exported_spans", "spans_named", "traceparent_of"]


@functools.cache
def _exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def exported_spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test (the process-wide SDK provider's exporter)."""
    exporter = _exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def traceparent_of(span: trace.Span | ReadableSpan | trace.SpanContext) -> str:
    """The W3C traceparent a span (or a span context) is written as."""
    context = span if isinstance(span, trace.SpanContext) else span.get_span_context()
    assert context is not None
    flags = int(context.trace_flags)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
