"""This checkout against another one, in pairs: the relay draining a backlog, and ``publish_many``.

``python -m bench.against OTHER_CHECKOUT [--rounds 3] [--backlog 300000]``

A whole benchmark run cannot tell a 10% change in CPU per message from the
machine's mood: on 2 shared cores the same code moved by 30% between runs.
This tool runs the two checkouts back to back, several rounds in turn, on the
same fresh servers, so both see the same background load:

- the relay (``python -m centrifugo_async relay`` from each checkout, 16 shards)
  draining a backlog enqueued before it starts: drain rate and the relay's CPU
  per message at full batches; this checkout also once with ``--freshness
  '*=all'``, which shows what monotonic delivery (the default) costs;
- the publisher: ``publish_many`` of 10,000 messages at a time into a fresh
  Redis, envelopes per second and the client's CPU per envelope.

The other checkout only needs to run ``centrifugo-async relay`` with
``--redis-url``, ``--api-url``, ``--shards`` and ``--metrics-port``, and
``Publisher.publish_many``. It prints one line per measurement and, at the
end, the median of each variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import backlog, movers
from bench.harness.settings import Settings
from devstack import RelayProcess

__all__ = ["main"]

HERE = str(Path(__file__).resolve().parent.parent)

_PUBLISH_MANY = """
import json, time, redis
from centrifugo_async import Message, Publisher
from devstack import RedisServer
pad = "x" * 150
with RedisServer() as server:
    with Publisher(redis.Redis.from_url(server.url), shards=16) as publisher:
        batch = [Message("obj:many", {"t": 0, "pad": pad}, f"key-{i % 1000}", i // 1000 + 1)
                 for i in range(200_000)]
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(batch), 10_000):
            publisher.publish_many(batch[start:start + 10_000])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"per_s": len(batch) / wall, "cpu_us": cpu / len(batch) * 1e6}))
"""


@contextlib.contextmanager
def _python_path(tree: str) -> Iterator[None]:
    """Child processes started meanwhile import ``centrifugo_async`` from ``tree``."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = tree
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def _relay_from(tree: str, freshness: str | None) -> Any:
    def relay_process(stack: Any, shards: int) -> RelayProcess:
        with _python_path(tree):
            return movers.relay_process(stack, shards, freshness)

    return relay_process


def _drain(tree: str, freshness: str | None, count: int, logs: Path) -> tuple[float, float]:
    backlog.relay_process = _relay_from(tree, freshness)  # type: ignore[assignment]
    result = backlog.run_backlog(Settings(backlog=count), logs)
    if "error" in result or not result.get("complete"):
        raise SystemExit(f"drain with {tree} failed: {result.get('error', 'incomplete')}")
    return result["drain_per_s"], result["relay_cpu_seconds"] / count * 1e6


def _publish_many(tree: str) -> tuple[float, float]:
    with _python_path(f"{tree}{os.pathsep}{HERE}"):
        out = subprocess.run(
            [sys.executable, "-c", _PUBLISH_MANY],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
    reply = json.loads(out.strip().splitlines()[-1])
    return reply["per_s"], reply["cpu_us"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.against", description=__doc__)
    parser.add_argument("other", help="the other checkout (a directory with centrifugo_async/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=300_000)
    args = parser.parse_args(argv)
    other = str(Path(args.other).resolve())
    if not (Path(other) / "centrifugo_async").is_dir():
        parser.error(f"{other} has no centrifugo_async/ package")
    drains = {
        "relay, other checkout": (other, None),
        "relay, this checkout": (HERE, None),
        "relay, this checkout, freshness all": (HERE, "*=all"),
    }
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-against-") as tmp:
        # Children run ``python -m`` / ``-c``, which put their working directory
        # first on sys.path: it must not be a checkout.
        os.chdir(tmp)
        for round_ in range(1, args.rounds + 1):
            for name, (tree, freshness) in drains.items():
                rate, cpu = _drain(tree, freshness, args.backlog, Path(tmp))
                results.setdefault(name, []).append((rate, cpu))
                print(f"round {round_}: {name}: {rate:,.0f} msg/s, {cpu:.2f} µs/msg", flush=True)
            for name, tree in (("publish_many, other", other), ("publish_many, this", HERE)):
                rate, cpu = _publish_many(tree)
                results.setdefault(name, []).append((rate, cpu))
                print(f"round {round_}: {name}: {rate:,.0f} env/s, {cpu:.2f} µs/env", flush=True)
    print("\nmedians:")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"  {name}: {rate:,.0f}/s, {cpu:.2f} µs CPU each")


if __name__ == "__main__":
    main()
