"""The benchmark's own processes, each ``python -m bench.<role>`` started through devstack.

Every role is its own process so that its CPU seconds and peak RSS can be read
from /proc without the others' mixed in: the producer (``bench.produce``), the
WebSocket subscriber (``bench.subscriber``), the naive worker
(``bench.naive_worker``) and the forwarder-inside-the-relay process
(``bench.combined``). The subscriber and the worker print ``ready`` once
connected; the harness waits for that line before going on.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from bench import ROOT
from devstack import DEV_API_KEY, ChildProcess

from .settings import Settings
from .stack import LIST_KEY, STREAM, Stack
from .systems import System

__all__ = ["bench_process", "combined_process", "naive_worker", "producer", "subscriber"]

READY_TIMEOUT = 30.0


def bench_process(
    module: str, *args: str, log_path: Path | None = None, ready_line: str | None = None
) -> ChildProcess:
    """``python -m module args`` run from the repository root (not started yet)."""
    return ChildProcess(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        log_path=log_path,
        ready_line=ready_line,
        start_timeout=READY_TIMEOUT,
    )


def naive_worker(system: System, stack: Stack, log_path: Path) -> ChildProcess:
    """The naive worker for ``system`` (not started yet): pops the list, posts each message."""
    return bench_process(
        "bench.naive_worker",
        "--redis-url",
        stack.redis.url,
        "--list",
        LIST_KEY,
        "--api-url",
        stack.centrifugo.api_url,
        "--api-key",
        DEV_API_KEY,
        "--in-flight",
        str(system.in_flight),
        log_path=log_path,
        ready_line="ready",
    )


def combined_process(stack: Stack, dsn: str, shards: int) -> ChildProcess:
    """The outbox forwarder and the relay in one process (not started yet)."""
    process = bench_process(
        "bench.combined",
        "--dsn",
        dsn,
        "--redis-url",
        stack.redis.url,
        "--api-url",
        stack.centrifugo.api_url,
        "--shards",
        str(shards),
    )
    process.env["CENTRIFUGO_API_KEY"] = DEV_API_KEY
    return process


def producer(
    system: System,
    stack: Stack,
    channel: str,
    count: int,
    rate: float,
    settings: Settings,
    out: Path,
    log_path: Path | None = None,
) -> ChildProcess:
    """The producer of one phase (not started yet): ``count`` messages at ``rate``
    (0: flat out) the way ``system`` takes them; it writes its timings to ``out``."""
    mode = {
        "naive": "list",
        "stream": "stream",
        "ceiling": "ceiling",
        "relay": "relay",
        "outbox": "outbox",
        "postgresql": "postgresql",
    }[system.kind]
    w = settings.workload
    database = (
        [
            "--dsn",
            stack.database.dsn,
            "--writers",
            str(settings.writers),
            "--transaction-messages",
            str(settings.transaction_messages),
            "--partitions",
            str(system.partitions),
        ]
        if stack.database is not None
        else []
    )
    return bench_process(
        "bench.produce",
        mode,
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--channel",
        channel,
        "--keys",
        str(w.keys),
        "--payload-bytes",
        str(w.payload_bytes),
        "--redis-url",
        stack.redis.url,
        "--shards",
        str(system.shards),
        "--list-key",
        LIST_KEY,
        "--stream",
        STREAM,
        "--streams",
        str(system.streams),
        "--api-url",
        stack.centrifugo.api_url,
        "--api-key",
        DEV_API_KEY,
        "--lanes",
        str(system.lanes),
        *database,
        "--out",
        str(out),
        log_path=log_path,
    )


@contextlib.contextmanager
def subscriber(
    stack: Stack,
    channel: str,
    expected: int,
    timeout: float,
    out: Path,
    log_path: Path,
    *extra: str,
) -> Iterator[ChildProcess]:
    """A subscriber to ``channel``, subscribed when the block starts.

    It stops by itself once ``expected`` messages arrived (or what ``extra``
    arguments say, e.g. ``--until-latest-of``), or at its own ``timeout``, and
    writes its tally to ``out``; leaving the block waits for that (10 s grace),
    and stops it if the block raised.
    """
    process = bench_process(
        "bench.subscriber",
        "--ws-url",
        stack.centrifugo.ws_url,
        "--channel",
        channel,
        "--expected",
        str(expected),
        "--timeout",
        str(timeout),
        "--out",
        str(out),
        *extra,
        log_path=log_path,
        ready_line="ready",
    )
    try:
        yield process.start()
        process.finish(timeout + 10)
    finally:
        process.close()
