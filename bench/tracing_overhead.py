"""What tracing costs: CPU per message of publishing and relaying, tracing off and on.

``python -m bench.tracing_overhead [--label NAME] [--redis-url URL]`` prints one
JSON object. Run it against another checkout (``PYTHONPATH=/path/to/old``) to
compare with a release without tracing: it measures only what both have.

- ``publish_cpu_us``: client CPU (``time.process_time``) per ``Publisher.publish``
  against a real Redis, when ``--redis-url`` is given: encoding, the script
  call, reading the reply.
- ``plan_us``: wall time per ``publish`` without the I/O (validate, route,
  encode), the only part tracing touches, and ``plan_many_us`` per message of
  a 100-message ``publish_many``.
- ``relay_us``: the relay's CPU per message between Redis and HTTP: decode each
  envelope, build its command, send batches of 100 to an API stub that accepts
  everything, settle the answers.

Each figure is the best of several rounds (the least disturbed by whatever else
runs on the machine). With tracing on, the SDK records every span into an
in-memory exporter, so the "on" figures include the SDK's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

ROUNDS = 7
PLAN_CALLS = 20_000
PUBLISH_CALLS = 3_000
RELAY_MESSAGES = 20_000
BATCH = 100


def best(measure: Callable[[], float], rounds: int = ROUNDS) -> float:
    return min(measure() for _ in range(rounds))


def tracing_supported() -> bool:
    from centrifugo_async.relay import RelaySettings

    return "tracing" in attrs.fields_dict(RelaySettings)


def plan_figures(tracing: bool) -> dict[str, float]:
    from centrifugo_async import Message, Publisher

    kwargs = {"tracing": True} if tracing else {}
    publisher = Publisher(None, shards=16, **kwargs)  # type: ignore[arg-type]
    data = {"status": "paid", "total": 1999, "items": [1, 2, 3]}
    many = [Message("obj:orders", data, f"order:{n}", n) for n in range(BATCH)]

    def one() -> float:
        started = time.perf_counter()
        for n in range(PLAN_CALLS):
            publisher._plan_one("obj:orders", data, f"order:{n}", n, None, None, None)
        return (time.perf_counter() - started) / PLAN_CALLS * 1e6

    def batch() -> float:
        started = time.perf_counter()
        for _ in range(PLAN_CALLS // BATCH):
            _plan(publisher, many)
        return (time.perf_counter() - started) / PLAN_CALLS * 1e6

    return {"plan_us": round(best(one), 3), "plan_many_us": round(best(batch), 3)}


def _plan(publisher: Any, messages: Sequence[Any]) -> Any:
    """``publish_many``'s planning, in this checkout's spelling."""
    if hasattr(publisher, "_plan"):
        return publisher._plan(messages)
    from centrifugo_async.publisher._plan import plan

    return plan(messages, publisher.keyspace, publisher.max_payload_bytes)


def publish_figures(redis_url: str, tracing: bool) -> dict[str, float]:
    import redis

    from centrifugo_async import Publisher

    kwargs = {"tracing": True} if tracing else {}
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    with Publisher(client, shards=16, **kwargs) as publisher:
        data = {"status": "paid", "total": 1999, "items": [1, 2, 3]}

        def measure() -> float:
            started = time.process_time()
            for n in range(PUBLISH_CALLS):
                publisher.publish("obj:orders", data, key=f"order:{n}", version=n)
            return (time.process_time() - started) / PUBLISH_CALLS * 1e6

        figure = best(measure)
    client.flushall()
    client.close()
    return {"publish_cpu_us": round(figure, 2)}


class _Leases:
    owner = "bench"

    def value(self, shard: int) -> str:
        return "lease"


class _Client:
    def register_script(self, source: str) -> None:
        return None


class _AcceptingAPI:
    async def send_batch(self, commands: Sequence[bytes], headers: Any = None) -> Any:
        from centrifugo_async.relay.api import BatchResult, ReplyStatus, Verdict

        return BatchResult(Verdict.REPLIES, (ReplyStatus(),) * len(commands))


def relay_figures(tracing: bool) -> dict[str, float]:
    from centrifugo_async import Message, Publisher
    from centrifugo_async.protocol.keys import Keyspace
    from centrifugo_async.relay import RelaySettings
    from centrifugo_async.relay.metrics import RelayMetrics
    from centrifugo_async.relay.worker import ShardWorker, _Outgoing

    kwargs = {"tracing": True} if tracing else {}
    publisher = Publisher(None, shards=1, **kwargs)  # type: ignore[arg-type]
    data = {"status": "paid", "total": 1999, "items": [1, 2, 3]}
    messages = [Message("obj:orders", data, f"order:{n}", n) for n in range(BATCH)]
    entries = []
    for call in _plan(publisher, messages).calls:
        for seq, (head, tail) in enumerate(zip(call.args[1::2], call.args[2::2], strict=True), 1):
            entries.append(head + str(seq).encode() + tail)
    settings = RelaySettings(api_key="k", metrics_port=0, **kwargs)
    worker = ShardWorker(
        Keyspace(shards=1).shard(0),
        _Client(),  # type: ignore[arg-type]
        _AcceptingAPI(),  # type: ignore[arg-type]
        _Leases(),  # type: ignore[arg-type]
        settings,
        asyncio.Event(),
        RelayMetrics(),
    )

    async def rounds() -> float:
        started = time.process_time()
        for _ in range(RELAY_MESSAGES // BATCH):
            items = [worker._prepare(raw) for raw in entries]
            outgoing = [_Outgoing(i, i.command) for i in items if i.command is not None]
            await worker._deliver(outgoing, "lease")
        return (time.process_time() - started) / RELAY_MESSAGES * 1e6

    return {"relay_us": round(best(lambda: asyncio.run(rounds())), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing_overhead")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--redis-url", help="a Redis to publish to (it is flushed)")
    args = parser.parse_args(argv)
    modes = [False, True] if tracing_supported() else [False]
    tracer: Any = None
    if True in modes:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        trace.set_tracer_provider(provider)
        tracer = trace.get_tracer("bench")
    results: dict[str, Any] = {"label": args.label}
    for tracing in modes:
        with tracer.start_as_current_span("request") if tracing else contextlib.nullcontext():
            figures = plan_figures(tracing)
            if args.redis_url:
                figures.update(publish_figures(args.redis_url, tracing))
            figures.update(relay_figures(tracing))
        results["tracing on" if tracing else "tracing off"] = figures
    print(json.dumps(results))


if __name__ == "__main__":
    main()
