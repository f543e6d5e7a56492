"""Waiting: capped exponential backoff with jitter, and sleeps a stop event can cut short."""

from __future__ import annotations

import asyncio
import contextlib
import random

import attrs

__all__ = ["Backoff", "wait_for_event"]


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


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
