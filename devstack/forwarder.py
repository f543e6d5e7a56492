"""``centrifugo-async outbox forward`` as a child process, for crash and signal tests."""

from __future__ import annotations

import os
import shutil
import sys

from .process import ChildProcess

__all__ = ["ForwarderProcess"]


class ForwarderProcess(ChildProcess):
    """One outbox forwarder; its metrics endpoint is off unless ``extra`` sets a port."""

    name = "forwarder"

    def __init__(self, dsn: str, redis_url: str, *extra: str) -> None:
        metrics = () if "--metrics-port" in extra else ("--metrics-port", "0")
        super().__init__(
            [
                sys.executable,
                "-m",
                "centrifugo_async",
                "outbox",
                "forward",
                "--redis-url",
                redis_url,
                *metrics,
                *extra,
            ],
            env={**os.environ, "CENTRIFUGO_ASYNC_OUTBOX_DSN": dsn},
        )

    def close(self) -> None:
        """SIGKILL, not SIGTERM: a test that wanted a clean exit already stopped it."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
