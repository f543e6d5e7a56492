"""The chaos harness at its default size: 0 lost and 0 inversions under faults."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.harness import ChaosConfig, run_chaos, write_report


async def test_chaos_default_size_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    config = ChaosConfig()
    assert config.messages >= 50_000 and config.keys >= 1_000
    report, content = await run_chaos(config)
    write_report(str(tmp_path / "chaos.json"), content)
    print(report.summary())
    assert report.published == config.messages
    assert report.relay_kills >= 2 and report.relay_pauses == 1
    assert report.centrifugo_restarts == 1
    assert report.lost == 0, report.summary()
    assert report.inversions == 0, report.summary()
    assert report.dead_letters == 0
    # Every repeat that reached a subscriber was dropped by the client-side gate.
    assert report.gate_applied == report.unique_delivered
    assert report.gate_dropped_duplicates + report.gate_dropped_stale == report.duplicated
    assert report.passed
