"""The report's latency targets (issue 13), from a hand-made run: ratios and verdicts."""

from __future__ import annotations

from typing import Any

from bench.report import latency_table, latency_targets


def system(name: str, kind: str, p50: float, p99: float, mover: float | None = None) -> Any:
    cpu = {"mover": mover} if mover is not None else {}
    phase = {"rate": 10_000, "messages": 1000, "latency_ms": {"p50": p50, "p99": p99, "max": p99}}
    return {
        "system": name,
        "label": name,
        "kind": kind,
        "throughput": {"messages": 1000, "cpu_seconds": {"mover": 0.004}},
        "latency": [{**phase, "cpu_seconds": cpu}],
    }


def run(relay_p50: float, relay_p99: float) -> dict[str, Any]:
    return {
        "settings": {"rates": [10_000]},
        "systems": [
            system("ceiling", "ceiling", 1.0, 4.0),
            system("stream-sharded", "stream", 1.0, 5.0),
            system("relay-16x1", "relay", relay_p50, relay_p99, mover=0.02),
        ],
    }


def test_each_latency_target_is_a_ratio_to_the_same_run() -> None:
    rows = {name: (measured, met) for name, measured, met in latency_targets(run(2.0, 6.0))}
    assert rows["relay p99 ≤ 1.5x the ceiling's p99 at 10,000 msg/s"] == (
        "1.50x (6.0 vs 4.0 ms)",
        "yes",
    )
    assert rows["relay p99 ≤ the built-in sharded consumer's at 10,000 msg/s"][1] == "**no**"
    assert rows["relay p50 ≤ 2x the ceiling's p50 at 10,000 msg/s"][1] == "yes"
    assert rows["relay CPU ≤ 5 µs per message at full batches (throughput phase)"] == (
        "4.0 µs",
        "yes",
    )


def test_a_slower_relay_misses_the_targets_and_the_table_shows_its_multiples() -> None:
    results = run(3.0, 7.0)
    verdicts = [met for name, _, met in latency_targets(results) if "p50" in name or "p99" in name]
    assert verdicts == ["**no**", "**no**", "**no**"]
    relay_row = next(line for line in latency_table(results) if line.startswith("| relay-16x1"))
    assert relay_row == "| relay-16x1 | 3.0x / 1.8x | 20.0 |"
