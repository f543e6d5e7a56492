"""How much a run measures: message counts, rates, phase lengths, repetitions."""

from __future__ import annotations

from pathlib import Path

import attrs

from bench.workload import Workload

__all__ = ["Settings"]


@attrs.frozen
class Settings:
    """The defaults are the full run; ``python -m bench --quick`` shrinks them."""

    messages: int = 100_000
    rates: tuple[int, ...] = (1000, 10_000)
    fraction_of_max: float | None = 0.8
    latency_seconds: float = 5.0
    backlog: int = 1_000_000
    publish_calls: int = 10_000
    publish_many_envelopes: int = 200_000
    workload: Workload = attrs.field(factory=Workload)
    profile_dir: Path | None = None
    balanced: bool = True
    """Wait for two relays to settle their shares of the shards before measuring."""
    repeat: int = 1
    """Runs of each phase; the median one is reported."""
    writers: int = 4
    """Concurrent writer connections of the database systems' producer."""
    transaction_messages: int = 100
    """Most messages one writer transaction carries (flat out; paced, what a tick brings)."""
