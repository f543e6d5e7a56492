"""The relay draining a backlog that was enqueued before it started: peak RSS and drain rate.

A relay claims at most one batch per shard at a time, so its memory must not
grow with the backlog; this phase checks that with a million messages.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procstats import cpu_seconds, peak_rss_mb
from bench.workload import now_us
from devstack import RelayProcess

from .movers import relay_process, wait_for_leases
from .profile import Profiler
from .roles import producer
from .settings import Settings
from .stack import Stack
from .systems import System

__all__ = ["run_backlog"]

ENQUEUE_TIMEOUT = 600.0


def run_backlog(settings: Settings, logs: Path, shards: int = 16) -> dict[str, Any]:
    """Relay peak RSS and drain rate for a backlog enqueued before it starts."""
    count = settings.backlog
    system = System("relay-backlog", "relay backlog drain", "relay", True, shards=shards)
    result: dict[str, Any] = {"messages": count, "shards": shards}
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        workdir = Path(tmp)
        stack = Stack(None)
        relay: RelayProcess | None = None
        try:
            out = workdir / "prod.json"
            channel = "obj:backlog"
            with producer(system, stack, channel, count, 0, settings, out) as enqueue:
                enqueue.wait(ENQUEUE_TIMEOUT)
            result["enqueue_per_s"] = round(
                count / _seconds(json.loads(out.read_text()), "first_enqueue_us", "last_enqueue_us")
            )
            relay = relay_process(stack, shards).start()
            relay_pid = relay.pid
            assert relay_pid is not None
            wait_for_leases(stack, shards, [relay])
            servers_before = stack.cpu_seconds()
            relay_before = cpu_seconds([relay_pid])
            started_us = now_us()
            profiler = None
            if settings.profile_dir is not None:
                profiler = Profiler.start(relay_pid, settings.profile_dir / "backlog")
            deadline = time.monotonic() + max(120.0, count / 2000)
            accepted = 0
            while time.monotonic() < deadline:
                accepted = stack.accepted(channel)
                if accepted >= count:
                    break
                time.sleep(0.02)
            elapsed = (now_us() - started_us) / 1e6
            if profiler is not None:
                profiler.stop()
            result.update(
                accepted=accepted,
                complete=accepted >= count,
                drain_per_s=round(accepted / elapsed),
                relay_cpu_seconds=round(cpu_seconds([relay_pid]) - relay_before, 2),
                server_cpu_seconds={
                    name: round(seconds - servers_before[name], 2)
                    for name, seconds in stack.cpu_seconds().items()
                },
                relay_peak_rss_mb=peak_rss_mb(relay_pid),
            )
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if relay is not None:
                relay.stop()
                relay.close()
            stack.close()
    return result


def _seconds(values: dict[str, Any], start: str, end: str) -> float:
    return max(1e-6, (int(values[end]) - int(values[start])) / 1e6)
