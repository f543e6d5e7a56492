"""The measured phases of one system: throughput, then latency at fixed offered rates.

1. **throughput**: ``messages`` enqueued as fast as the producer can, timed
   from the first enqueue to the last message accepted by Centrifugo (the
   channel's history offset reaching the count, polled every few ms) and to the
   last message received by a WebSocket subscriber;
2. **latency** at fixed offered rates (1,000/s, 10,000/s and 80% of the
   throughput measured in phase 1), each ``latency_seconds`` long, reporting
   enqueue-to-subscriber p50/p99/max. A rate above what the system sustained in
   phase 1 is skipped by the caller: its queue would only grow, and the latency
   with it.

Every phase uses its own channel, checks that each message arrived (distinct
(key, version) pairs) and counts per-key order inversions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procstats import cpu_seconds
from bench.workload import now_us

from .movers import Mover
from .profile import Profiler
from .roles import producer, subscriber
from .settings import Settings
from .stack import Stack
from .systems import System

__all__ = ["latency_phase", "latency_rates", "repeated", "run_phase", "throughput_phase"]


def run_phase(
    system: System,
    stack: Stack,
    mover: Mover,
    settings: Settings,
    *,
    channel: str,
    count: int,
    rate: float,
    timeout: float,
    workdir: Path,
) -> dict[str, Any]:
    """Produce ``count`` messages at ``rate`` (0: flat out) and measure their way through."""
    sub_out, prod_out = workdir / f"{channel}-sub.json", workdir / f"{channel}-prod.json"

    def cpu_now() -> dict[str, float]:
        parts = {"mover": cpu_seconds(mover.pids())}
        if mover.forwarders:
            parts["forwarder"] = cpu_seconds(mover.forwarder_pids())
        return {**parts, **stack.cpu_seconds()}

    cpu_before = cpu_now()
    accepted, accepted_us = 0, 0
    with subscriber(stack, channel, count, timeout, sub_out, workdir / f"{channel}-sub.log"):
        process = producer(
            system,
            stack,
            channel,
            count,
            rate,
            settings,
            prod_out,
            log_path=workdir / f"{channel}-prod.log",
        )
        try:
            process.start()
            profiler: Profiler | None = None
            if settings.profile_dir is not None and mover.pids():
                name = system.name if rate == 0 else f"{system.name}-at-{rate:g}"
                profiler = Profiler.start(mover.pids()[0], settings.profile_dir / name)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                accepted = stack.accepted(channel)
                if accepted >= count:
                    accepted_us = now_us()
                    break
                if process.poll() not in (None, 0):
                    break
                # Fine-grained while timing throughput; the latency phases only need the count.
                time.sleep(0.005 if rate == 0 else 0.1)
            cpu_after = cpu_now()
            if profiler is not None:
                profiler.stop()
            process.finish(max(1.0, deadline - time.monotonic()))
        finally:
            process.close()
    produced = json.loads(prod_out.read_text()) if prod_out.exists() else {}
    seen = json.loads(sub_out.read_text()) if sub_out.exists() else {}
    first_us = produced.get("first_enqueue_us", 0)
    last_receive_us = seen.get("last_receive_us", 0)
    complete = accepted >= count and seen.get("unique", 0) >= count
    result: dict[str, Any] = {
        "channel": channel,
        "messages": count,
        "rate": rate or None,
        "offered_rate": produced.get("offered_rate"),
        "accepted": accepted,
        "received": seen.get("received", 0),
        "unique_received": seen.get("unique", 0),
        "duplicates": seen.get("duplicates", 0),
        "inversions": seen.get("inversions", 0),
        "complete": complete,
        "problems": seen.get("problems", []) + ([] if produced else ["producer wrote nothing"]),
        "cpu_seconds": {
            **{k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_before},
            "producer": produced.get("cpu_seconds"),
            "subscriber": seen.get("cpu_seconds"),
        },
    }
    if produced.get("rejected"):
        result["problems"].append(f"{produced['rejected']} commands rejected")
    if rate == 0 and first_us:
        if accepted_us:
            result["accepted_per_s"] = round(count / ((accepted_us - first_us) / 1e6))
        if complete and last_receive_us:
            result["received_per_s"] = round(count / ((last_receive_us - first_us) / 1e6))
    if rate:
        result["latency_ms"] = seen.get("latency_ms")
    return result


def throughput_phase(
    system: System, stack: Stack, mover: Mover, settings: Settings, workdir: Path
) -> dict[str, Any]:
    """``settings.messages`` flat out; the median run by accepted messages per second."""
    timeout = max(60.0, settings.messages / 500)

    def once(i: int) -> dict[str, Any]:
        return run_phase(
            system,
            stack,
            mover,
            settings,
            channel=f"obj:throughput-{i}",
            count=settings.messages,
            rate=0,
            timeout=timeout,
            workdir=workdir,
        )

    return repeated(settings, lambda r: r.get("accepted_per_s", 0), once)


def latency_phase(
    system: System, stack: Stack, mover: Mover, settings: Settings, rate: int, workdir: Path
) -> dict[str, Any]:
    """``settings.latency_seconds`` at ``rate``; the median run by p99."""
    count = max(1, int(rate * settings.latency_seconds))

    def once(i: int) -> dict[str, Any]:
        return run_phase(
            system,
            stack,
            mover,
            settings,
            channel=f"obj:latency-{rate}-{i}",
            count=count,
            rate=rate,
            timeout=settings.latency_seconds * 3 + 30,
            workdir=workdir,
        )

    return repeated(settings, lambda r: (r.get("latency_ms") or {}).get("p99", 1e9), once)


def repeated(
    settings: Settings,
    metric: Callable[[dict[str, Any]], float],
    run_once: Callable[[int], dict[str, Any]],
) -> dict[str, Any]:
    """Run a phase ``settings.repeat`` times and keep the median run by ``metric``.

    On a shared 2-core machine one run can land on a burst of someone else's
    work; the median of a few is steadier. Every run's metric is kept in
    ``repeats``; the phase counts as complete only if every run delivered all.
    """
    runs = [run_once(i) for i in range(settings.repeat)]
    if len(runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=metric)
    chosen = dict(ordered[len(ordered) // 2])
    chosen["repeats"] = [metric(r) for r in runs]
    chosen["complete"] = all(r["complete"] for r in runs)
    return chosen


def latency_rates(settings: Settings, best: int) -> list[int]:
    """The fixed rates, plus ``fraction_of_max`` of the throughput ``best`` (rounded to
    hundreds) unless it is within 10% of a fixed one."""
    rates = list(settings.rates)
    if settings.fraction_of_max and best:
        extra = int(round(best * settings.fraction_of_max, -2))
        if all(abs(extra - r) > 0.1 * r for r in rates):
            rates.append(extra)
    return sorted(rates)
