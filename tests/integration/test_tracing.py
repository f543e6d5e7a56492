"""OpenTelemetry from publish to the relay's request, over real Redis and Centrifugo.

A tracing publisher writes the current trace context into each envelope; the
relay (``tracing`` on) sends each batch that carries one in a span that
continues it: a child of the one context of its messages, or linked to each
of several. The SDK's in-memory exporter shows the spans.
"""

from __future__ import annotations

import asyncio

import attrs
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from centrifugo_async import AsyncPublisher, shard_for
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.tracing import SPAN_NAME
from devstack import CentrifugoServer
from tests.support.stack import wait_until_drained
from tests.support.subscriber import Subscriber
from tests.support.tracing import exported_spans, spans_named, traceparent_of

__all__ = ["exported_spans"]  # the fixture, used by name

SHARDS = 4
CHANNEL = "obj:traced"
tracer = trace.get_tracer("tests.tracing")


def keys_on_distinct_shards(count: int) -> list[str]:
    found: dict[int, str] = {}
    for n in range(1000):
        found.setdefault(shard_for(f"order:{n}", SHARDS), f"order:{n}")
    assert len(found) >= count
    return list(found.values())[:count]


async def test_a_publish_trace_goes_on_in_the_relays_request_to_centrifugo(
    relay_settings: RelaySettings,
    centrifugo: CentrifugoServer,
    exported_spans: InMemorySpanExporter,
) -> None:
    alone, shared, untraced = keys_on_distinct_shards(3)
    url = relay_settings.redis_url
    async with AsyncPublisher.from_url(url, shards=SHARDS, tracing=True) as publisher:
        with tracer.start_as_current_span("place order") as order:
            traced = await publisher.publish(CHANNEL, {"n": 1}, key=alone, version=1)
        with tracer.start_as_current_span("first request") as first:
            await publisher.publish(CHANNEL, {"n": 2}, key=shared, version=1)
        with tracer.start_as_current_span("second request") as second:
            await publisher.publish(CHANNEL, {"n": 3}, key=shared, version=2)
        outside = await publisher.publish(CHANNEL, {"n": 4}, key=untraced, version=1)
    async with AsyncPublisher.from_url(url, shards=SHARDS) as not_tracing:
        with tracer.start_as_current_span("not traced"):
            off = await not_tracing.publish(CHANNEL, {"n": 5}, key=untraced, version=2)
    assert traced.traceparent == traceparent_of(order)
    assert outside.traceparent is None and off.traceparent is None

    stop = asyncio.Event()
    async with Subscriber(centrifugo.ws_url, [CHANNEL]) as subscriber:
        relay = asyncio.create_task(serve(attrs.evolve(relay_settings, tracing=True), stop=stop))
        received = await subscriber.wait_for(5, within=20)
        await wait_until_drained(url, SHARDS, within=20)
        stop.set()
        await relay
    (delivered,) = [e for e in received if e["key"] == alone]
    assert delivered["traceparent"] == traced.traceparent  # forwarded byte for byte

    sends = spans_named(exported_spans, SPAN_NAME)
    assert len(sends) == 2, "one span per batch of traced messages, none for the others"
    (child,) = [s for s in sends if s.parent is not None]
    assert child.parent is not None and child.parent.span_id == order.get_span_context().span_id
    assert child.context.trace_id == order.get_span_context().trace_id
    assert child.attributes is not None
    assert child.attributes["centrifugo_async.shard"] == shard_for(alone, SHARDS)
    (linked,) = [s for s in sends if s.parent is None]
    assert {traceparent_of(link.context) for link in linked.links} == {
        traceparent_of(first),
        traceparent_of(second),
    }
    assert linked.attributes is not None
    assert linked.attributes["messaging.batch.message_count"] == 2
