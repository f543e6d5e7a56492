"""Wall-clock time as the wire carries it: integer milliseconds since the Unix epoch."""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch (envelope ``ts``, dead-letter and lease times)."""
    return time.time_ns() // 1_000_000
