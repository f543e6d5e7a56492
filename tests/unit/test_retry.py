"""The one backoff policy and its ``async for`` attempts loop.

Delays that matter for the outcome are either tiny (the loop must get past them)
or a minute long (the test must never sit through them: a stop event or a
``succeeded()`` has to cut them out). Time only appears as generous upper
bounds, so a slow machine cannot make these tests fail.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys

import pytest

from centrifugo_async._retry import Attempt, Attempts, Backoff, wait_for_event

LONG = 60.0
"""A delay no test may ever wait through."""
BOUND = 5.0
"""Generous upper bound for anything that should happen at once."""


@pytest.mark.parametrize(("initial", "cap"), [(0.05, 5.0), (0.5, 30.0), (0.1, 2.0), (1.0, 1.0)])
def test_delays_are_jittered_within_half_to_full_capped_ceiling(initial: float, cap: float) -> None:
    backoff = Backoff(initial=initial, cap=cap)
    for failures in range(40):
        ceiling = min(cap, initial * 2**failures)
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, ceiling, delays)
        assert len(set(delays)) > 1, "delays must be jittered"


def test_delays_grow_exponentially_until_the_cap() -> None:
    backoff = Backoff(initial=0.1, cap=2.0)
    # below the cap, every delay after n + 1 failures is at least any delay after n
    for failures in range(4):
        assert min(backoff.delay(failures + 1) for _ in range(50)) >= 0.1 * 2**failures
    # 0.1 * 2**5 = 3.2 is over the cap: from there on the delays stay in [1.0, 2.0]
    for failures in (5, 6, 20):
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(1.0 <= d <= 2.0 for d in delays)


def test_huge_failure_counts_stay_capped() -> None:
    backoff = Backoff(initial=0.05, cap=5.0)
    for failures in (33, 1_000, 10**9):
        assert 2.5 <= backoff.delay(failures) <= 5.0


@pytest.mark.parametrize(("initial", "cap"), [(0, 1.0), (1.0, 0), (-1.0, 1.0), (math.nan, 1.0)])
def test_delays_must_be_positive(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Backoff(initial=initial, cap=cap)


async def test_first_attempt_does_not_wait() -> None:
    attempts = Backoff(initial=LONG, cap=LONG).attempts()
    async with asyncio.timeout(BOUND):
        first = await anext(attempts)
    assert first.number == 1
    assert LONG / 2 <= first.delay <= LONG
    assert attempts.failures == 0


async def test_failed_attempts_are_numbered_and_back_off() -> None:
    seen: list[Attempt] = []
    async with asyncio.timeout(BOUND):
        async for attempt in Backoff(initial=0.001, cap=0.004).attempts():
            seen.append(attempt)
            if attempt.number == 5:
                break
    assert [a.number for a in seen] == [1, 2, 3, 4, 5]
    for attempt in seen:
        ceiling = min(0.004, 0.001 * 2 ** (attempt.number - 1))
        assert ceiling / 2 <= attempt.delay <= ceiling


async def test_a_failed_attempt_waits_before_the_next() -> None:
    stop = asyncio.Event()
    attempts = Backoff(initial=LONG, cap=LONG).attempts(stop)
    await anext(attempts)  # fails: the body did not call succeeded()
    next_attempt = asyncio.ensure_future(anext(attempts))
    done, _ = await asyncio.wait({next_attempt}, timeout=0.05)
    assert not done, "the second attempt must wait for the backoff delay"
    stop.set()
    async with asyncio.timeout(BOUND):
        with pytest.raises(StopAsyncIteration):
            await next_attempt
    assert attempts.failures == 1


async def test_stop_wakes_the_wait_and_ends_the_loop() -> None:
    stop = asyncio.Event()
    attempts: list[int] = []
    async with asyncio.timeout(BOUND):
        async for attempt in Backoff(initial=LONG, cap=LONG).attempts(stop):
            attempts.append(attempt.number)
            asyncio.get_running_loop().call_soon(stop.set)
    assert attempts == [1]


async def test_stop_set_during_an_attempt_ends_the_loop_without_waiting() -> None:
    stop = asyncio.Event()
    attempts: list[int] = []
    async with asyncio.timeout(BOUND):
        async for attempt in Backoff(initial=LONG, cap=LONG).attempts(stop):
            attempts.append(attempt.number)
            stop.set()
    assert attempts == [1]


async def test_stop_set_after_a_success_ends_the_loop() -> None:
    stop = asyncio.Event()
    numbers: list[int] = []
    async with asyncio.timeout(BOUND):
        loop = Backoff(initial=LONG, cap=LONG).attempts(stop)
        async for attempt in loop:
            numbers.append(attempt.number)
            loop.succeeded()
            if len(numbers) == 3:
                stop.set()
    assert numbers == [1, 1, 1]


async def test_no_attempt_once_stop_is_set() -> None:
    stop = asyncio.Event()
    stop.set()
    attempts = [a async for a in Backoff(initial=LONG, cap=LONG).attempts(stop)]
    assert attempts == []


async def test_succeeded_skips_the_wait_and_resets_the_backoff() -> None:
    loop: Attempts = Backoff(initial=0.001, cap=LONG).attempts()
    numbers: list[int] = []
    async with asyncio.timeout(BOUND):
        async for attempt in loop:
            numbers.append(attempt.number)
            if len(numbers) == 3:
                assert loop.failures == 2
                assert attempt.delay <= 0.004
                loop.succeeded()
                assert loop.failures == 0
            elif len(numbers) == 4:
                # right after a success: no wait, and the next failure starts small again
                assert attempt.delay <= 0.001
                break
    assert numbers == [1, 2, 3, 1]


async def test_success_is_followed_at_once_even_with_a_long_backoff() -> None:
    loop = Backoff(initial=LONG, cap=LONG).attempts()
    count = 0
    async with asyncio.timeout(BOUND):
        async for _ in loop:
            count += 1
            if count == 10:
                break
            loop.succeeded()
    assert count == 10


async def test_wait_for_event() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0.001) is False
    asyncio.get_running_loop().call_soon(event.set)
    async with asyncio.timeout(BOUND):
        assert await wait_for_event(event, LONG) is True
    async with asyncio.timeout(BOUND):
        assert await wait_for_event(event, LONG) is True


def test_the_subscriber_side_does_not_import_the_relay_stack() -> None:
    """The subscriber helper retries with this module: it must stay light."""
    heavy = ("httpx", "prometheus_client", "centrifugo_async.relay")
    code = (
        "import sys, centrifugo_async._retry, centrifugo_async.client.synced; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
