"""Capped exponential backoff with jitter."""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]


@attrs.define
class Backoff:
    """Delays for consecutive failures: ``uniform(c / 2, c)`` with ``c = min(cap, initial * 2**n)``.

    The jitter keeps many shards that failed together from retrying in lockstep.
    """

    initial: float
    cap: float
    failures: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2 ** min(self.failures, 32))
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
