"""py-spy on a mover while it works (``python -m bench --profile``), and a summary of it.

``Profiler.start(pid, path)`` records raw stacks into ``<path>.txt``;
``stop()`` ends the recording and writes ``<path>.summary.txt``, the on-CPU
samples by module and function that docs/performance.md quotes.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from devstack import ChildProcess

__all__ = ["Profiler", "summarize_profile"]

SAMPLES_PER_SECOND = 250
STOP_TIMEOUT = 60.0
"""py-spy writes its output when it stops, which takes a while for a long recording."""


class Profiler:
    """One py-spy recording of one process."""

    def __init__(self, process: ChildProcess, raw: Path) -> None:
        self.process = process
        self.raw = raw

    @classmethod
    def start(cls, pid: int, path: Path) -> Profiler | None:
        """Start recording ``pid``; None when py-spy is not installed next to Python."""
        py_spy = Path(sys.executable).with_name("py-spy")
        if not py_spy.exists():
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = Path(f"{path}.txt")
        command = [str(py_spy), "record", "--pid", str(pid), "--rate", str(SAMPLES_PER_SECOND)]
        command += ["--nonblocking", "--format", "raw", "--output", str(raw)]
        return cls(ChildProcess(command).start(), raw)

    def stop(self) -> None:
        """py-spy writes its output on SIGINT (Ctrl-C), not on SIGTERM."""
        self.process.stop(STOP_TIMEOUT, sig=signal.SIGINT)
        self.process.close()
        summarize_profile(self.raw)


def summarize_profile(raw: Path, top: int = 25) -> None:
    """``<raw>.summary.txt``: on-CPU samples by module, by function (self) and inclusive.

    Frames are grouped per function (line numbers dropped), modules by file path.
    """
    if not raw.exists():
        return
    own: dict[str, int] = {}
    modules: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + count
        module = _module_of(leaf)
        modules[module] = modules.get(module, 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return

    def ranked(table: dict[str, int], limit: int) -> list[str]:
        best = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [f"{100 * count / total:6.1f}   {name}" for name, count in best]

    lines = [f"{total} samples (on CPU)", "", "self %   module", *ranked(modules, 12)]
    lines += ["", "self %   function", *ranked(own, top)]
    lines += ["", "total %  function (including callees)", *ranked(inclusive, top)]
    raw.with_suffix(".summary.txt").write_text("\n".join(lines) + "\n")


def _module_of(frame: str) -> str:
    """``f (centrifugo_async/protocol/envelope.py)`` -> ``centrifugo_async/protocol/envelope.py``;
    third-party and standard-library files are grouped by package."""
    path = frame.rpartition("(")[2].rstrip(")")
    parts = path.split("/")
    if parts[0] == "centrifugo_async" or len(parts) == 1:
        return path or frame
    return parts[0] + "/"
