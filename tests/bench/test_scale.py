"""``python -m bench --suite scale --quick`` as a smoke test.

Every layout (one or two Centrifugo nodes on the Redis engine, the queues on a
Redis or a 3-node Redis Cluster, one or two relays) delivers every message, in
order per key, to a subscriber of the first node, in both phases; with two
nodes both carry publications; the CPU of every process is accounted. Nothing
here is about speed: ``docs/scaling.md`` holds the numbers.
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
def scale_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-scale")
    command = [sys.executable, "-m", "bench", "--suite", "scale", "--quick", "--no-docs"]
    completed = subprocess.run(
        [*command, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert (out / "latest-scale.json").exists(), completed.stderr[-4000:]
    assert (out / "latest-scale.md").exists()
    results: dict[str, Any] = json.loads((out / "latest-scale.json").read_text())
    results["_returncode"] = completed.returncode
    results["_stderr"] = completed.stderr
    return results


def test_every_layout_delivered_everything_in_order(scale_run: dict[str, Any]) -> None:
    layouts = {layout["layout"]: layout for layout in scale_run["layouts"]}
    assert {"1n-1r", "2n-1r", "2n-2r", "cluster-2n-1r", "cluster-2n-2r"} <= set(layouts)
    for name, layout in layouts.items():
        assert "error" not in layout, (name, layout.get("error"))
        for phase in ("throughput", "drain"):
            run = layout[phase]
            assert run["complete"], (name, phase, run)
            assert run["unique_received"] == run["messages"], (name, phase)
            assert run["inversions"] == 0, (name, phase)
    assert scale_run["_returncode"] == 0, scale_run["_stderr"][-4000:]


def test_two_nodes_both_carry_publications_and_every_process_is_accounted(
    scale_run: dict[str, Any],
) -> None:
    for layout in scale_run["layouts"]:
        run = layout["throughput"]
        spread = run["publishes_per_node"]
        assert len(spread) == layout["nodes"]
        assert sum(spread) == run["messages"]
        assert all(count > 0 for count in spread), (layout["layout"], spread)
        cpu = run["cpu_seconds"]
        assert set(cpu) >= {"producer", "relay", "queue_redis", "centrifugo", "engine_redis"}
