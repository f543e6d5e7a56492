"""The services' garbage-collector settings (centrifugo_async._gc)."""

from __future__ import annotations

import json
import subprocess
import sys

from centrifugo_async._gc import YOUNG_THRESHOLD

PROBE = """
import gc, json
before = gc.get_threshold()
from centrifugo_async._gc import tune_for_a_service
tune_for_a_service()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_a_service_collects_rarely_and_never_walks_what_existed_at_start() -> None:
    """In a process of its own: the settings are process-wide."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    probe = json.loads(out)
    assert probe["before"][0] < YOUNG_THRESHOLD
    assert probe["after"] == [YOUNG_THRESHOLD, 20, 20]
    assert probe["frozen"] > 1000, "the objects of the started process are frozen"
