"""Backoff and retry loops: one implementation for the relay, the tools and the subscriber helper.

Every retry loop in the package has the same shape: try; on failure wait a
jittered, capped, exponentially growing delay, unless asked to stop; try again::

    async for attempt in Backoff(initial=0.1, cap=2.0).attempts(stop):
        try:
            return await fetch()
        except OSError as exc:
            log.warning("fetch failed", extra={"error": str(exc), "retry_in": attempt.delay})

Long-running loops that mostly succeed call ``attempts.succeeded()`` after each
success, so the next failure starts again from the initial delay and a success
is followed at once by the next attempt.

Only the standard library and attrs are imported: the subscriber helper uses this
module and must not pay for the relay's HTTP and metrics stacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import attrs

__all__ = ["Attempt", "Attempts", "Backoff", "wait_for_event"]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"backoff {attribute.name} must be positive, got {value!r}")


@attrs.frozen
class Backoff:
    """Delays for consecutive failures: ``uniform(c / 2, c)`` with ``c = min(cap, initial * 2**n)``.

    The jitter keeps many shards (or many pages) that failed together from
    retrying in lockstep. Both bounds must be positive: a zero delay would turn
    a retry loop into a busy loop against a server that is already failing.
    """

    initial: float = attrs.field(validator=_positive)
    cap: float = attrs.field(validator=_positive)

    def delay(self, failures: int) -> float:
        """The wait after ``failures + 1`` consecutive failures (``failures`` starts at 0)."""
        ceiling = min(self.cap, self.initial * 2 ** min(failures, 32))
        return random.uniform(ceiling / 2, ceiling)

    def attempts(self, stop: asyncio.Event | None = None) -> Attempts:
        """An ``async for`` loop of attempts that waits between them; ends when ``stop`` is set."""
        return Attempts(self, stop)


@attrs.frozen
class Attempt:
    """One pass of a retry loop."""

    number: int
    """1 for the first attempt, then 2, 3, ... (back to 1 after ``succeeded()``)."""
    delay: float
    """How long the loop waits before the next attempt if this one fails."""


class Attempts:
    """The ``async for`` helper behind ``Backoff.attempts``.

    Each attempt after a failed one waits its ``delay`` first; setting ``stop``
    cuts the wait short and ends the loop. An attempt fails unless the body calls
    ``succeeded()`` or leaves the loop.
    """

    def __init__(self, backoff: Backoff, stop: asyncio.Event | None) -> None:
        self._backoff = backoff
        self._stop = stop
        self._failures = 0
        self._wait: float | None = None

    @property
    def failures(self) -> int:
        """Consecutive failed attempts so far."""
        return self._failures

    def succeeded(self) -> None:
        """Mark the current attempt as a success: no wait, and the backoff starts over."""
        self._failures = 0
        self._wait = None

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Attempt:
        if self._wait is not None:
            self._failures += 1
            if await self._sleep(self._wait):
                raise StopAsyncIteration
        if self._stop is not None and self._stop.is_set():
            raise StopAsyncIteration
        self._wait = self._backoff.delay(self._failures)
        return Attempt(number=self._failures + 1, delay=self._wait)

    async def _sleep(self, seconds: float) -> bool:
        if self._stop is None:
            await asyncio.sleep(seconds)
            return False
        return await wait_for_event(self._stop, seconds)


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
