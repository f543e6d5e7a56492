"""Measure the pipeline on this machine: ``python -m bench.pipeline [--messages N]``.

Real Redis and Centrifugo on loopback (started fresh), the relay in-process.
Reports publish() round trips/s, publish_many() envelopes/s, relay drain
throughput for a backlog, and enqueue-to-subscriber latency at a fixed offered
rate. Prints a table and writes the numbers as JSON (``--out``). Bounded: every
phase has a message count and a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from centrifuge import Client, PublicationContext, SubscriptionEventHandler

from centrifugo_async import AsyncPublisher, Message, Publisher
from centrifugo_async.relay import RelaySettings, serve
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer
from tests.support.stack import wait_until_drained

# Each phase uses its own channel: Centrifugo would swallow a repeat of the same
# (channel, key, version) within its 5 minute idempotency window.
CHANNEL = "obj:bench"
PAYLOAD = {"text": "x" * 180}  # about 200 bytes of JSON data


def bench_publish(redis_url: str, shards: int, count: int) -> float:
    with Publisher.from_url(redis_url, shards=shards) as publisher:
        started = time.perf_counter()
        for i in range(count):
            publisher.publish(CHANNEL, PAYLOAD, key=f"k{i % 1000}", version=i)
        return count / (time.perf_counter() - started)


def bench_publish_many(redis_url: str, shards: int, count: int) -> float:
    batch = [Message(CHANNEL, PAYLOAD, f"k{i % 1000}", i) for i in range(count)]
    with Publisher.from_url(redis_url, shards=shards) as publisher:
        started = time.perf_counter()
        for start in range(0, count, 10_000):
            publisher.publish_many(batch[start : start + 10_000])
        return count / (time.perf_counter() - started)


def settings(redis_url: str, centrifugo: CentrifugoServer, shards: int) -> RelaySettings:
    return RelaySettings(
        redis_url=redis_url, api_url=centrifugo.api_url, api_key=DEV_API_KEY, shards=shards
    )


async def bench_drain(
    redis_url: str, centrifugo: CentrifugoServer, shards: int, count: int
) -> float:
    """Relay throughput for a backlog of ``count`` already-queued messages."""
    with Publisher.from_url(redis_url, shards=shards) as publisher:
        for start in range(0, count, 10_000):
            publisher.publish_many(
                [
                    Message(f"{CHANNEL}-drain", PAYLOAD, f"k{i % 1000}", i)
                    for i in range(start, start + 10_000)
                ]
            )
    stop = asyncio.Event()
    started = time.perf_counter()
    relay = asyncio.create_task(serve(settings(redis_url, centrifugo, shards), stop=stop))
    await wait_until_drained(redis_url, shards, within=600)
    elapsed = time.perf_counter() - started
    stop.set()
    await relay
    return count / elapsed


class LatencyRecorder(SubscriptionEventHandler):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.latencies_ms: list[float] = []
        self.complete = asyncio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.latencies_ms.append(time.time() * 1000 - ctx.pub.data["data"]["sent_ms"])
        if len(self.latencies_ms) >= self.expected:
            self.complete.set()


async def bench_latency(
    redis_url: str, centrifugo: CentrifugoServer, shards: int, rate: int, seconds: float
) -> dict[str, float]:
    """Enqueue-to-subscriber latency at ``rate`` messages/s (sent in 1 ms ticks)."""
    total = int(rate * seconds)
    recorder = LatencyRecorder(total)
    client = Client(centrifugo.ws_url)
    await client.connect()
    channel = f"{CHANNEL}-latency-{rate}"
    await client.new_subscription(channel, events=recorder).subscribe()
    stop = asyncio.Event()
    relay = asyncio.create_task(serve(settings(redis_url, centrifugo, shards), stop=stop))
    await asyncio.sleep(0.5)
    async with AsyncPublisher.from_url(redis_url, shards=shards) as publisher:
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            data = {"sent_ms": time.time() * 1000, **PAYLOAD}
            await publisher.publish(channel, data, key=f"k{i % 1000}", version=i)
    await asyncio.wait_for(recorder.complete.wait(), 30)
    stop.set()
    await relay
    await client.disconnect()
    values = sorted(recorder.latencies_ms)
    return {
        "rate": rate,
        "messages": total,
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(values[int(len(values) * 0.99) - 1], 2),
        "max_ms": round(values[-1], 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "shards": args.shards,
    }
    with RedisServer() as redis, CentrifugoServer() as centrifugo:
        results["publish_per_s"] = round(bench_publish(redis.url, args.shards, 5000))
        redis.restart()
        results["publish_many_envelopes_per_s"] = round(
            bench_publish_many(redis.url, args.shards, args.messages)
        )
        redis.restart()
        results["relay_drain_msgs_per_s"] = round(
            await bench_drain(redis.url, centrifugo, args.shards, args.messages)
        )
        results["latency"] = []
        for rate in args.rates:
            redis.restart()
            results["latency"].append(
                await bench_latency(redis.url, centrifugo, args.shards, rate, args.seconds)
            )
    return results


def render(results: dict[str, Any]) -> str:
    lines = [
        f"machine: {results['machine']}, shards: {results['shards']}",
        f"publish()            {results['publish_per_s']:>10,} round trips/s",
        f"publish_many()       {results['publish_many_envelopes_per_s']:>10,} envelopes/s",
        f"relay drain          {results['relay_drain_msgs_per_s']:>10,} messages/s into Centrifugo",
    ]
    for lat in results["latency"]:
        lines.append(
            f"latency @ {lat['rate']:>6}/s   p50 {lat['p50_ms']} ms  p99 {lat['p99_ms']} ms"
            f"  max {lat['max_ms']} ms  (enqueue -> WebSocket subscriber)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rates", type=int, nargs="*", default=[1000])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(render(outcome))
