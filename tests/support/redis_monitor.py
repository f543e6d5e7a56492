"""Watch the commands Redis executes (``MONITOR``), to know when a relay's script call ran.

A test that resumes a stale relay needs to know when that relay's ``ack`` call
has reached Redis, whatever its outcome, before it looks at the in-flight list:
the relay's log only tells when the call failed, and a buggy relay's call that
succeeds logs nothing. Redis is single-threaded, so once ``MONITOR`` has shown a
command, any command the test sends afterwards sees its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

import redis.asyncio

__all__ = ["RedisMonitor"]


class RedisMonitor:
    """Records every command Redis executes while it is open (an async context manager)."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.asyncio.Redis.from_url(redis_url)
        self.commands: list[str] = []
        """Each command as ``MONITOR`` shows it: the arguments joined by spaces."""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> RedisMonitor:
        self._task = asyncio.create_task(self._watch())
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait((ready, self._task), timeout=10, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # raises what stopped it
        if not self._ready.is_set():
            raise TimeoutError("MONITOR did not start within 10 s")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def wait_for(self, matches: Callable[[str], bool], within: float) -> str:
        """Wait until a command for which ``matches`` is true has run; returns it."""
        async with asyncio.timeout(within):
            while True:
                found = next((c for c in self.commands if matches(c)), None)
                if found is not None:
                    return found
                self._changed.clear()
                await self._changed.wait()

    async def _watch(self) -> None:
        async with self._client.monitor() as monitor:
            self._ready.set()
            while True:
                info = await monitor.next_command()
                self.commands.append(info["command"])
                self._changed.set()
