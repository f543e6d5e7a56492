"""Every system in turn, each on its own fresh Redis and Centrifugo, then the relay
backlog, the publisher alone and the cost of validating entries: the results
``python -m bench`` writes as JSON."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procstats import peak_rss_mb

from .backlog import run_backlog
from .catchup import run_catchup
from .drain import drain_phase
from .movers import Mover
from .phases import latency_phase, latency_rates, throughput_phase
from .publisher import run_publisher
from .settings import Settings
from .stack import Stack
from .systems import System
from .validation import run_validation

__all__ = ["run_all", "run_system"]


def run_system(system: System, settings: Settings, logs: Path) -> dict[str, Any]:
    """Everything measured for one system, on a fresh Redis and Centrifugo.

    A failure is recorded as ``error`` in the result instead of stopping the run.
    """
    result: dict[str, Any] = {
        "system": system.name,
        "label": system.label,
        "kind": system.kind,
        "ordered": system.ordered,
        "mover": system.mover,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bench-{system.name}-") as tmp:
        workdir = Path(tmp)
        with Stack(system) as stack:
            mover = Mover(system, logs)
            try:
                mover.start(stack, settings)
                throughput = throughput_phase(system, stack, mover, settings, workdir)
                result["throughput"] = throughput
                result["latency"] = []
                best = throughput.get("accepted_per_s", 0)
                for rate in latency_rates(settings, best):
                    if rate > 0.95 * best:
                        result["latency"].append(
                            {"rate": rate, "skipped": f"above the sustained {best:,}/s"}
                        )
                        continue
                    result["latency"].append(
                        latency_phase(system, stack, mover, settings, rate, workdir)
                    )
                if system.database:
                    result["drain"] = drain_phase(system, stack, mover, settings, workdir)
                result["mover_peak_rss_mb"] = max(
                    (rss for pid in mover.pids() if (rss := peak_rss_mb(pid)) is not None),
                    default=None,
                )
                if mover.forwarders:
                    result["forwarder_peak_rss_mb"] = max(
                        (rss for pid in mover.forwarder_pids() if (rss := peak_rss_mb(pid))),
                        default=None,
                    )
                result["centrifugo_peak_rss_mb"] = peak_rss_mb(stack.pids()["centrifugo"])
            except Exception as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                mover.close()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def run_all(
    systems: Sequence[System],
    settings: Settings,
    logs: Path,
    *,
    backlog: bool,
    publisher: bool,
    catchup: bool = False,
) -> dict[str, Any]:
    """The ``systems``, ``backlog``, ``catchup`` and ``publisher`` parts of a run's
    results, with progress on stderr."""
    results: dict[str, Any] = {"systems": []}
    for system in systems:
        _progress(f"--> {system.label}")
        outcome = run_system(system, settings, logs)
        results["systems"].append(outcome)
        _progress(f"    {_brief(outcome)}")
    if backlog and settings.backlog:
        _progress(f"--> relay draining a backlog of {settings.backlog:,}")
        results["backlog"] = run_backlog(settings, logs)
        _progress(f"    {results['backlog']}")
    if catchup and settings.backlog:
        _progress(f"--> relay catching up on a backlog of {settings.backlog:,}")
        results["catchup"] = run_catchup(settings, logs)
        _progress(f"    {results['catchup']['modes']}")
    if publisher:
        _progress("--> publisher alone")
        results["publisher"] = run_publisher(settings)
        _progress(f"    {results['publisher']}")
    _progress("--> validating entries (the JSON profile), in this process")
    results["validation"] = run_validation(settings)
    _progress(f"    {results['validation']}")
    return results


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _brief(outcome: dict[str, Any]) -> str:
    if "error" in outcome:
        return f"ERROR {outcome['error']}"
    t = outcome["throughput"]
    parts = [
        f"accepted {t.get('accepted_per_s', '-')}/s",
        f"received {t.get('received_per_s', '-')}/s",
        f"inversions {t['inversions']}",
    ]
    for lat in outcome["latency"]:
        if lat.get("latency_ms"):
            parts.append(f"@{lat['rate']}: p99 {lat['latency_ms']['p99']} ms")
    if "drain" in outcome:
        parts.append(f"drain {outcome['drain'].get('drain_per_s', '-')}/s")
    return ", ".join(parts)
