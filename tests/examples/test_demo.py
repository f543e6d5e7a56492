"""``scripts/demo`` stops as cleanly as it starts when Ctrl-C interrupts it.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group, so the
test starts ``python -m examples.demo`` as the leader of a group of its own and
signals that group, exactly like a terminal would: anything the demo started in
the same group would be hit at the same moment.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"^stopped: published (?P<published>\d+) updates, received (?P<received>\d+); "
    r"relay exited with 0, 0 still queued, 0 dead letters$",
    re.MULTILINE,
)


def _lines_into(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _rest(lines: queue.Queue[str | None]) -> str:
    """What the reader queued after the lines already consumed, up to end of file."""
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(line)
    return "".join(rest)


def test_ctrl_c_stops_the_demo_with_a_summary_and_no_traceback() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.demo", "--rate", "20", "--shards", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert demo.stdout is not None
    reader = threading.Thread(target=_lines_into, args=(demo.stdout, lines), daemon=True)
    reader.start()
    try:
        received_lines = 0
        deadline = time.monotonic() + 60
        while received_lines < 3:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the demo exited early: {demo.wait(5)}"
            received_lines += line.startswith("received ")
        os.killpg(demo.pid, signal.SIGINT)
        code = demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    stdout = _rest(lines)
    assert demo.stderr is not None
    stderr = demo.stderr.read()

    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    summary = SUMMARY.search(stdout)
    assert summary is not None, stdout[-2000:]
    published, received = int(summary["published"]), int(summary["received"])
    assert published >= 3
    assert received == published
