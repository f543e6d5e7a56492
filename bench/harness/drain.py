"""A database system draining rows that were committed before its consumer could move them.

The throughput phase runs the writers and the movers together on the same
cores, so it measures the whole path. This phase isolates the movers: with
every lane's advisory lock held by the harness (``database.held_lanes``) the
writers commit ``settings.messages`` rows that nothing consumes; then the
locks are let go and the rate is timed from the first message Centrifugo
accepted to the last (so the forwarder's claim interval and start-up are not
counted), with the CPU of every process over the drain.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.procstats import cpu_seconds
from bench.workload import now_us

from .database import held_lanes
from .movers import Mover
from .roles import producer
from .settings import Settings
from .stack import Stack
from .systems import System

__all__ = ["drain_phase"]

WRITE_TIMEOUT = 600.0
POLL = 0.005


def drain_phase(
    system: System, stack: Stack, mover: Mover, settings: Settings, workdir: Path
) -> dict[str, Any]:
    """The movers' own rate and CPU per message over a committed backlog."""
    assert stack.database is not None
    count = settings.messages
    channel = "obj:drain"
    out = workdir / "drain-prod.json"
    result: dict[str, Any] = {"channel": channel, "messages": count}
    if system.kind == "outbox":
        mover.stop_forwarding()
    with held_lanes(system, stack.database.dsn):
        if system.kind == "outbox":
            mover.start_forwarding(stack)
        with producer(
            system, stack, channel, count, 0, settings, out, log_path=workdir / "drain-prod.log"
        ) as writing:
            writing.wait(WRITE_TIMEOUT)
        written = json.loads(out.read_text())
        result["write_per_s"] = round(
            count / max(1e-6, (written["last_enqueue_us"] - written["first_enqueue_us"]) / 1e6)
        )
        before = _cpu(mover, stack)
    deadline = time.monotonic() + max(60.0, count / 500)
    first_offset, first_us, accepted, last_us = 0, 0, 0, 0
    while time.monotonic() < deadline:
        accepted = stack.accepted(channel)
        if accepted and not first_us:
            first_offset, first_us = accepted, now_us()
        if accepted >= count:
            last_us = now_us()
            break
        time.sleep(POLL)
    after = _cpu(mover, stack)
    result.update(
        accepted=accepted,
        complete=accepted >= count,
        cpu_seconds={role: round(after[role] - before[role], 2) for role in before},
    )
    if last_us and last_us > first_us:
        result["drain_per_s"] = round((count - first_offset) / ((last_us - first_us) / 1e6))
    return result


def _cpu(mover: Mover, stack: Stack) -> dict[str, float]:
    parts = {"mover": cpu_seconds(mover.pids())}
    if mover.forwarders:
        parts["forwarder"] = cpu_seconds(mover.forwarder_pids())
    return {**parts, **stack.cpu_seconds()}
