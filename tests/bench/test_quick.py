"""The benchmark harness in ``--quick`` mode, as a smoke test.

It runs every system of ``python -m bench`` on small counts against real Redis
and Centrifugo and checks two things: every system delivered every message, and
every ordered system kept per-key order (no inversion in any phase). Timings
vary with the machine and whatever else runs on it, so no threshold on speed or
latency belongs here; ``docs/performance.md`` holds the numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-docs", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert (out / "latest.json").exists(), completed.stderr[-4000:]
    results: dict[str, Any] = json.loads((out / "latest.json").read_text())
    results["_stderr"] = completed.stderr
    results["_returncode"] = completed.returncode
    return results


DATABASE_SYSTEMS = {"outbox", "outbox-combined", "postgresql"}
"""Writers -> PostgreSQL -> (forwarder -> Redis -> relay | Centrifugo's built-in consumer)."""


def test_every_system_ran(quick_run: dict[str, Any]) -> None:
    names = {s["system"] for s in quick_run["systems"]}
    assert {"naive-ordered", "naive-parallel", "ceiling", "relay-16x1", "relay-1x2"} <= names
    assert "relay-16x1-all" in names, "the default relay with monotonic delivery off"
    assert names >= DATABASE_SYSTEMS
    assert any(name.startswith("stream-") for name in names)
    errors = {s["system"]: s["error"] for s in quick_run["systems"] if "error" in s}
    assert not errors, quick_run["_stderr"][-4000:]


def test_every_system_delivered_every_message(quick_run: dict[str, Any]) -> None:
    incomplete = []
    for system in quick_run["systems"]:
        for phase in [system.get("throughput", {}), *system.get("latency", [])]:
            if "skipped" in phase:
                continue
            count = phase.get("messages")
            if not (phase.get("accepted", 0) >= count and phase.get("unique_received") == count):
                incomplete.append((system["system"], phase.get("channel"), phase))
    assert not incomplete
    assert quick_run["backlog"]["complete"], quick_run["backlog"]
    assert quick_run["_returncode"] == 0, quick_run["_stderr"][-4000:]


def test_every_ordered_system_kept_per_key_order(quick_run: dict[str, Any]) -> None:
    """An ordered system with one inversion in any phase is not ordered."""
    ordered = [s for s in quick_run["systems"] if s.get("ordered") and "error" not in s]
    assert {s["system"] for s in ordered} >= {"naive-ordered", "ceiling", "relay-16x1"}
    inverted = []
    for system in ordered:
        for phase in [system.get("throughput", {}), *system.get("latency", [])]:
            if "skipped" not in phase and phase.get("inversions") != 0:
                inverted.append((system["system"], phase.get("channel"), phase.get("inversions")))
    assert inverted == []


def test_database_systems_keep_per_key_order(quick_run: dict[str, Any]) -> None:
    """Both write paths through PostgreSQL deliver each key's versions in commit order.

    The writers race for objects (several connections, uniform random keys), so
    a key's rows are committed by different transactions; the row lock orders
    them, and the outbox lanes and the built-in consumer's partitions (both the
    key's shard) must keep that order all the way to the subscriber.
    """
    for system in quick_run["systems"]:
        if system["system"] not in DATABASE_SYSTEMS:
            continue
        phases = [system["throughput"], *system["latency"]]
        inversions = {p["channel"]: p["inversions"] for p in phases if "skipped" not in p}
        assert inversions, system["system"]
        assert not any(inversions.values()), (system["system"], inversions)
        assert system["throughput"]["cpu_seconds"].get("postgres"), system["system"]
        assert system["drain"]["complete"], system["drain"]


def test_the_catch_up_reaches_every_key_with_about_one_publication_per_key_with_latest(
    quick_run: dict[str, Any],
) -> None:
    """After a backlog, both modes bring every key to its last version without an
    inversion; latest-wins gets there with one publication per key (the quick backlog
    fits the look-ahead), monotonic delivery sends every version."""
    catchup = quick_run["catchup"]
    modes = catchup["modes"]
    assert set(modes) == {"monotonic", "latest"}
    for run in modes.values():
        assert "error" not in run, run
        assert run["complete"] and run["inversions"] == 0, run
    assert modes["monotonic"]["publications"] == catchup["messages"]
    keys = modes["latest"]["keys_in_backlog"]
    assert keys > 0.9 * catchup["keys"], "the workload's keys (a few may draw no update)"
    assert modes["latest"]["publications"] == keys
    assert modes["latest"]["superseded"] == catchup["messages"] - keys
