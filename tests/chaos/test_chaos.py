"""The chaos harness at its default size: nothing lost, reordered, sent stale or sent twice."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.harness import ChaosConfig, run_chaos, write_report


async def test_chaos_default_size_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    config = ChaosConfig()
    assert config.messages >= 50_000 and config.keys >= 1_000
    assert config.freshness is None, "the relays run in their default mode, as in production"
    report, content = await run_chaos(config)
    write_report(str(tmp_path / "chaos.json"), content)
    print(report.summary())
    summary = report.summary()
    assert report.published == config.messages
    assert report.relay_kills >= 2 and report.centrifugo_restarts == 1
    assert report.relay_pauses == 1 and report.pause_in_flight > 0, report.faults
    assert report.drained, summary
    assert (report.lost, report.inversions, sum(report.seq_gaps.values())) == (0, 0, 0), summary
    # Monotonic delivery leaves superseded versions out, each accounted for.
    assert report.mode == "monotonic" and report.finals_missing == 0, summary
    assert report.acked <= report.unique_delivered, summary
    assert report.seq_inversions == 0, summary
    assert report.dead_letters == 0
    # What the relays sent (the proxy log) and acknowledged (Redis).
    assert (report.stale_sends, report.sent_duplicates) == (0, 0), summary
    assert report.acked + report.superseded == report.published, summary
    # The client-side gate, given evictions and injected stale copies to handle.
    assert report.gate.worked and report.gate.passed, summary
    assert report.passed, summary
