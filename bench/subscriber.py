"""A lean WebSocket subscriber, run as its own process by the harness.

``python -m bench.subscriber --ws-url URL --channel CH --expected N --out FILE``
``python -m bench.subscriber ... --until-latest-of N --keys K`` (catch-up: done when
every key of the workload's first N messages reached its last version)

It speaks Centrifugo's JSON client protocol directly over ``websockets`` and
decodes each publication with msgspec, so it keeps up with well over 100,000
messages/s on one core; a full SDK would become the bottleneck and hide the
difference between the systems. It prints ``ready`` once subscribed, then
counts publications until it has ``expected`` distinct (key, version) pairs, the
timeout passes or it gets SIGTERM, and writes what it saw as JSON: counts,
per-key order inversions, first and last receive time and the
enqueue-to-receive latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import connect

from bench.workload import Workload


class _Inner(msgspec.Struct):
    key: str = ""
    version: int = 0
    t: int = 0


class _Data(msgspec.Struct):
    """Publication data: the workload payload, or an envelope whose ``data`` is it."""

    key: str = ""
    version: int = 0
    t: int = 0
    data: _Inner | None = None


class _Pub(msgspec.Struct):
    data: _Data


class _Push(msgspec.Struct):
    channel: str = ""
    pub: _Pub | None = None
    disconnect: dict[str, Any] | None = None


class _Frame(msgspec.Struct):
    id: int = 0
    push: _Push | None = None
    error: dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(_Frame)


class Tally:
    """What arrived, in arrival order."""

    def __init__(self, expected: int, latest: dict[str, int] | None = None) -> None:
        self.expected = expected
        self.latest = latest
        """Done when every key reached this version (instead of ``expected`` pairs)."""
        self.at_latest = 0
        self.done_us = 0
        self.received = 0
        self.seen: set[tuple[str, int]] = set()
        self.highest: dict[str, int] = {}
        self.inversions = 0
        self.latencies_us: list[int] = []
        self.first_us = 0
        self.last_us = 0
        self.problems: list[str] = []
        self.done = asyncio.Event()

    def add(self, data: _Data, received_us: int) -> None:
        inner = data.data
        key, version = data.key, data.version
        sent_us = inner.t if inner is not None else data.t
        if not key and inner is not None:
            key, version = inner.key, inner.version
        self.received += 1
        if not self.first_us:
            self.first_us = received_us
        self.last_us = received_us
        self.latencies_us.append(received_us - sent_us)
        if version < self.highest.get(key, -1):
            self.inversions += 1
        else:
            if self.latest is not None and version == self.latest.get(key):
                self.at_latest += key not in self.highest or self.highest[key] < version
            self.highest[key] = version
        self.seen.add((key, version))
        finished = (
            len(self.seen) >= self.expected
            if self.latest is None
            else self.at_latest >= len(self.latest)
        )
        if finished and not self.done.is_set():
            self.done_us = received_us
            self.done.set()

    def summary(self) -> dict[str, Any]:
        values = sorted(self.latencies_us)
        return {
            "expected": self.expected,
            "received": self.received,
            "unique": len(self.seen),
            "duplicates": self.received - len(self.seen),
            "inversions": self.inversions,
            "first_receive_us": self.first_us,
            "last_receive_us": self.last_us,
            "done_us": self.done_us,
            "keys_at_latest": self.at_latest,
            "keys": len(self.latest or ()),
            "latency_ms": percentiles_ms(values),
            "problems": self.problems,
        }


def percentiles_ms(sorted_us: list[int]) -> dict[str, float] | None:
    """p50 / p99 / max (nearest rank) of sorted microsecond values, in ms."""
    if not sorted_us:
        return None
    n = len(sorted_us)

    def rank(q: float) -> float:
        return round(sorted_us[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1000, 3)

    return {"p50": rank(0.50), "p99": rank(0.99), "max": round(sorted_us[-1] / 1000, 3)}


async def subscribe(ws_url: str, channel: str, tally: Tally, ready: asyncio.Event) -> None:
    async with connect(ws_url, max_size=None, compression=None) as ws:
        await ws.send(
            '{"id":1,"connect":{}}\n' + json.dumps({"id": 2, "subscribe": {"channel": channel}})
        )
        while not tally.done.is_set():
            message = await ws.recv(decode=False)
            now_us = time.time_ns() // 1000
            for line in message.split(b"\n"):
                if not line:
                    continue
                frame = _decoder.decode(line)
                push = frame.push
                if push is not None:
                    if push.pub is not None:
                        tally.add(push.pub.data, now_us)
                    elif push.disconnect is not None:
                        tally.problems.append(f"disconnected: {push.disconnect}")
                        return
                elif frame.error is not None:
                    tally.problems.append(f"error reply {frame.id}: {frame.error}")
                    return
                elif frame.id == 2:
                    ready.set()
                elif frame.id == 0:
                    await ws.send("{}")  # answer the server's ping


async def main(args: argparse.Namespace) -> dict[str, Any]:
    latest = None
    if args.until_latest_of:
        latest = {}
        for key, version in Workload(args.keys).key_versions(args.until_latest_of):
            latest[key] = version
    tally = Tally(args.expected, latest)
    ready = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, tally.done.set)
    task = asyncio.create_task(subscribe(args.ws_url, args.channel, tally, ready))
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait({task, ready_wait}, timeout=10, return_when="FIRST_COMPLETED")
    if ready.is_set():
        print("ready", flush=True)
    cpu_started = _cpu()
    done_wait = asyncio.create_task(tally.done.wait())
    await asyncio.wait({task, done_wait}, timeout=args.timeout, return_when="FIRST_COMPLETED")
    if not task.done() and not tally.done.is_set():
        tally.problems.append(f"timed out after {args.timeout}s")
    elif task.done() and not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        tally.problems.append(f"{type(exc).__name__}: {exc}")
    for pending in (task, ready_wait, done_wait):
        pending.cancel()
    return {**tally.summary(), "cpu_seconds": round(_cpu() - cpu_started, 3)}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ws-url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--until-latest-of", type=int, default=0)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    arguments.out.write_text(json.dumps(result))
    sys.exit(0)
