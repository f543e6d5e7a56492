"""CPU seconds and peak RSS of running processes, from /proc (via psutil)."""

from __future__ import annotations

from pathlib import Path

import psutil  # type: ignore[import-untyped]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (0 for a process that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of every child it started, the exited ones included.

    For a server that forks a process per connection (PostgreSQL): the live
    children are read directly, and the kernel adds a child's time to its
    parent's ``children_*`` counters when the parent reaps it, so connections
    that came and went (a phase's writers) are counted too.
    """
    try:
        parent = psutil.Process(pid)
        times = parent.cpu_times()
        children = parent.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = times.user + times.system + times.children_user + times.children_system
    return total + cpu_seconds([child.pid for child in children])


def peak_rss_mb(pid: int) -> float | None:
    """The kernel's high-water mark of the resident set (``VmHWM``), in MiB.

    Exact, unlike sampling: the kernel updates it on every page fault. None when
    the process is gone.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)
    except (OSError, psutil.Error):
        return None


def machine() -> dict[str, object]:
    """What the numbers were taken on, and how busy the machine was."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in psutil.getloadavg()],
    }
