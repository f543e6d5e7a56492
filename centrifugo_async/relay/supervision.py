"""Supervision: every long-lived task of the relay outlives its own bugs.

The shard workers, the lease keeper, the health sampler and the topology
watcher all run the same way: a loop of steps under ``supervise``. A step that
raises an exception nobody foresaw is a bug or a state nobody imagined; it must
not end the task silently (a dead lease keeper lets every lease expire while
``serve`` keeps running and delivers nothing; a dead watcher keeps a stop from
ever ending the workers). So the traceback is logged once per distinct error,
not once per retry, and the step is tried again after a backoff
(``_retry.Backoff``) that grows with consecutive failures and starts over after
a success.

Only the documented fatal class, ``RelayFatalError`` (bad API key or URL, shard
count mismatch), ends the loop: it propagates to ``serve``, which stops the
relay. Errors a task expects (Redis unreachable, say) are logged as a warning,
without a traceback, and retried with the same backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .._retry import Backoff
from ..exceptions import RelayFatalError

__all__ = ["supervise"]

log = logging.getLogger("centrifugo_async.relay")


async def supervise(
    step: Callable[[], Awaitable[bool | None]],
    *,
    task: str,
    backoff: Backoff,
    stop: asyncio.Event,
    shard: int | None = None,
    relay: str | None = None,
    expected: tuple[type[Exception], ...] = (),
    expected_message: str = "",
    on_crash: Callable[[], None] | None = None,
) -> None:
    """Call ``step`` again and again until ``stop`` is set or a step returns True.

    A step paces itself (it waits for work or for its interval); a failed step
    is followed by the backoff's wait instead. ``expected`` errors are logged
    as ``expected_message`` (a warning); any other exception as
    "<task> crashed, restarting" (an error, with its traceback the first time
    it occurs in a row), after which ``on_crash`` is called. ``shard`` and
    ``relay`` name the task in the log lines. Raises only ``RelayFatalError``.
    """
    attempts = backoff.attempts(stop)
    last_crash: str | None = None
    async for attempt in attempts:
        try:
            done = await step()
        except RelayFatalError:
            raise
        except expected as exc:
            log.warning(
                expected_message,
                extra={
                    "shard": shard,
                    "relay": relay,
                    "error": str(exc),
                    "retry_in": attempt.delay,
                },
            )
        except Exception as exc:
            crash = f"{type(exc).__name__}: {exc}"
            if on_crash is not None:
                on_crash()
            log.error(
                f"{task} crashed, restarting",
                extra={"shard": shard, "relay": relay, "error": crash, "retry_in": attempt.delay},
                exc_info=crash != last_crash,
            )
            last_crash = crash
        else:
            if done:
                return
            attempts.succeeded()
            last_crash = None
