"""The producer side of every system, run as its own process by the harness.

``python -m bench.produce MODE --count N [--rate R] ...`` where MODE is

- ``relay``: ``Publisher.publish_many`` into the sharded lists (our system);
- ``list``: ``RPUSH`` of ``{"channel", "data"}`` onto one Redis list, the format
  the reference article pushes for its naive worker;
- ``stream``: ``XADD`` with fields ``method=publish`` and ``payload={"channel",
  "data"}``, the command format of Centrifugo's ``redis_stream`` consumer, onto
  one stream or (``--streams K``) onto K streams chosen by the key's shard;
- ``ceiling``: no Redis at all: ``/api/batch`` bodies (the same commands the
  relay sends) posted straight at Centrifugo, one request in flight per lane,
  keys routed to lanes like the relay routes them to shards;
- ``outbox`` and ``postgresql``: writers that bump objects' row versions in
  PostgreSQL (``--dsn``) and insert the messages in the same transactions, into
  this project's outbox or Centrifugo's documented outbox table (``bench.writers``).

``--rate 0`` enqueues as fast as possible (throughput); ``--rate R`` offers R
messages/s in 1 ms ticks, stamping each message right before its enqueue call
(latency). Writes the first and last enqueue time (µs since the epoch) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import redis

from bench import writers
from bench.workload import Workload, now_us, payload
from centrifugo_async import Message, Publisher
from centrifugo_async._clock import now_ms
from centrifugo_async.protocol.envelope import Envelope, default_idempotency_key, encode_envelope
from centrifugo_async.protocol.routing import shard_for
from centrifugo_async.relay._http11 import KeepAliveClient
from centrifugo_async.relay.api import Verdict, batch_body, classify_response, publish_command

_encoder = msgspec.json.Encoder()
CHUNK = 10_000
TICK = 0.001
T_PLACEHOLDER = 1_000_000_000_000_000
"""Same digit count as a current time in µs: splicing the real one keeps the size."""
T_MARKER = b'"t":%d,' % T_PLACEHOLDER

Enqueue = Callable[[Sequence[tuple[str, int]]], None]


def relay_enqueue(args: argparse.Namespace, pad: str) -> Enqueue:
    publisher = Publisher.from_url(args.redis_url, cluster=args.redis_cluster, shards=args.shards)
    publisher.ensure_topology()
    channel = args.channel

    def enqueue(batch: Sequence[tuple[str, int]]) -> None:
        publisher.publish_many(
            [Message(channel, payload(key, version, pad), key, version) for key, version in batch]
        )

    return enqueue


def list_enqueue(args: argparse.Namespace, pad: str) -> Enqueue:
    client = redis.Redis.from_url(args.redis_url)
    channel = args.channel

    def enqueue(batch: Sequence[tuple[str, int]]) -> None:
        items = [
            _encoder.encode({"channel": channel, "data": payload(key, version, pad)})
            for key, version in batch
        ]
        for start in range(0, len(items), 1000):
            client.rpush(args.list_key, *items[start : start + 1000])

    return enqueue


def stream_names(base: str, streams: int) -> list[str]:
    return [base] if streams == 1 else [f"{base}:{i}" for i in range(streams)]


def stream_enqueue(args: argparse.Namespace, pad: str) -> Enqueue:
    client = redis.Redis.from_url(args.redis_url)
    names = stream_names(args.stream, args.streams)
    channel = args.channel

    def enqueue(batch: Sequence[tuple[str, int]]) -> None:
        pipe = client.pipeline(transaction=False)
        for key, version in batch:
            body = _encoder.encode({"channel": channel, "data": payload(key, version, pad)})
            stream = names[shard_for(key, len(names))]
            pipe.xadd(stream, {"method": "publish", "payload": body})
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()

    return enqueue


def produce_sync(args: argparse.Namespace, enqueue: Enqueue) -> dict[str, Any]:
    """Feed ``enqueue`` the run's messages, as fast as possible or at ``--rate``."""
    messages = Workload(args.keys, args.payload_bytes).key_versions(args.count)
    first_us = 0
    if args.rate <= 0:
        while chunk := _take(messages, CHUNK):
            first_us = first_us or _mark_start()
            enqueue(chunk)
        return {"first_enqueue_us": first_us, "last_enqueue_us": now_us()}
    started = time.perf_counter()
    sent = 0
    while sent < args.count:
        due = min(args.count, int((time.perf_counter() - started) * args.rate) + 1)
        if due > sent:
            chunk = _take(messages, min(due - sent, 1000))
            first_us = first_us or _mark_start()
            enqueue(chunk)
            sent += len(chunk)
        next_tick = started + (sent / args.rate)
        delay = min(TICK, next_tick - time.perf_counter())
        if delay > 0:
            time.sleep(delay)
    return {
        "first_enqueue_us": first_us,
        "last_enqueue_us": now_us(),
        "offered_rate": round(args.count / (time.perf_counter() - started)),
    }


def _take(messages: Iterator[tuple[str, int]], count: int) -> list[tuple[str, int]]:
    return [m for _, m in zip(range(count), messages, strict=False)]


class Ceiling:
    """``/api/batch`` straight at Centrifugo: one request in flight per lane."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = KeepAliveClient(
            args.api_url,
            {"X-API-Key": args.api_key, "Content-Type": "application/json"},
            timeout=30.0,
            connect_timeout=2.0,
        )
        self.pad = Workload(args.keys, args.payload_bytes).pad
        self.seq = [0] * args.lanes
        self.rejected = 0

    def command(self, key: str, version: int) -> tuple[int, bytes]:
        """The relay's command for this message: the envelope as ``data``, verbatim.

        Its payload carries the placeholder time ``T_PLACEHOLDER``; ``stamp``
        splices the send time in, so commands can be built before the clock runs.
        """
        lane = shard_for(key, self.args.lanes)
        self.seq[lane] += 1
        envelope = Envelope(
            v=1,
            channel=self.args.channel,
            key=key,
            version=version,
            seq=self.seq[lane],
            shard=lane,
            ts=now_ms(),
            data={"key": key, "version": version, "t": T_PLACEHOLDER, "pad": self.pad},
        )
        idempotency_key = default_idempotency_key(self.args.channel, key, version)
        return lane, publish_command(
            self.args.channel, encode_envelope(envelope), idempotency_key, None
        )

    async def post(self, body: bytes, count: int) -> None:
        response = await self.client.post("/batch", body)
        result = classify_response(response.status, response.body, count)
        if result.verdict is not Verdict.REPLIES:
            raise RuntimeError(f"ceiling batch failed: {result.reason}")
        self.rejected += sum(not reply.accepted for reply in result.replies)

    async def run_throughput(self) -> dict[str, Any]:
        """Prebuild every body, then post them as fast as Centrifugo accepts them."""
        lanes: list[list[bytes]] = [[] for _ in range(self.args.lanes)]
        messages = Workload(self.args.keys, self.args.payload_bytes).key_versions(self.args.count)
        for key, version in messages:
            lane, command = self.command(key, version)
            lanes[lane].append(command)
        size = self.args.max_batch
        prebuilt = [
            [
                (batch_body(commands[i : i + size]), len(commands[i : i + size]))
                for i in range(0, len(commands), size)
            ]
            for commands in lanes
        ]

        async def lane_loop(bodies: list[tuple[bytes, int]]) -> None:
            for body, count in bodies:
                await self.post(body, count)

        first_us = _mark_start()
        await asyncio.gather(*(lane_loop(bodies) for bodies in prebuilt))
        return {"first_enqueue_us": first_us, "last_enqueue_us": now_us()}

    async def run_paced(self) -> dict[str, Any]:
        """Offer ``--rate`` messages/s; each lane posts whatever has queued up."""
        buffers: list[list[bytes]] = [[] for _ in range(self.args.lanes)]
        wake = [asyncio.Event() for _ in range(self.args.lanes)]
        finished = False

        async def lane_loop(index: int) -> None:
            buffer = buffers[index]
            while buffer or not finished:
                if not buffer:
                    wake[index].clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake[index].wait(), 0.05)
                    continue
                batch = buffer[: self.args.max_batch]
                del buffer[: len(batch)]
                await self.post(batch_body(batch), len(batch))

        tasks = [asyncio.create_task(lane_loop(i)) for i in range(self.args.lanes)]
        messages = Workload(self.args.keys, self.args.payload_bytes).key_versions(self.args.count)
        # Built up front, like the throughput run's bodies: the poster's own CPU
        # (envelope, idempotency key) must not limit the rate it offers.
        prebuilt = [self.command(key, version) for key, version in messages]
        started = time.perf_counter()
        first_us, sent = 0, 0
        while sent < self.args.count:
            due = min(self.args.count, int((time.perf_counter() - started) * self.args.rate) + 1)
            stamp = b'"t":%d,' % now_us()
            first_us = first_us or _mark_start()
            for lane, command in prebuilt[sent:due]:
                buffers[lane].append(command.replace(T_MARKER, stamp, 1))
                wake[lane].set()
            sent = due
            await asyncio.sleep(max(0.0, started + sent / self.args.rate - time.perf_counter()))
        finished = True
        await asyncio.gather(*tasks)
        return {
            "first_enqueue_us": first_us,
            "last_enqueue_us": now_us(),
            "offered_rate": round(self.args.count / (time.perf_counter() - started)),
        }

    async def run(self) -> dict[str, Any]:
        try:
            if self.args.rate <= 0:
                result = await self.run_throughput()
            else:
                result = await self.run_paced()
        finally:
            await self.client.aclose()
        return {**result, "rejected": self.rejected}


_started_cpu = [0.0]


def _mark_start() -> int:
    """Called at the first enqueue: the time it happened, and where CPU counting starts
    (building prebuilt bodies before it is not the producer's running cost)."""
    _started_cpu[0] = _cpu()
    return now_us()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "mode", choices=["relay", "list", "stream", "ceiling", "outbox", "postgresql"]
    )
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--redis-cluster", action="store_true", help="relay mode: a Redis Cluster")
    parser.add_argument("--list-key", default="centrifugo.publish")
    parser.add_argument("--stream", default="centrifugo.stream")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--api-url", default="")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--lanes", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--dsn", default="")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--transaction-messages", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.mode == "ceiling":
        result = asyncio.run(Ceiling(args).run())
    elif args.mode in ("outbox", "postgresql"):
        result = asyncio.run(writers.produce(args, _mark_start))
    else:
        pad = Workload(args.keys, args.payload_bytes).pad
        factory = {"relay": relay_enqueue, "list": list_enqueue, "stream": stream_enqueue}
        result = produce_sync(args, factory[args.mode](args, pad))
    result["count"] = args.count
    result["cpu_seconds"] = round(_cpu() - _started_cpu[0], 3)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
