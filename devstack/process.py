"""One child process with its output in a log file: start, wait until ready, stop.

Every local service (Redis, Centrifugo, the relay) and every process of the
benchmark (producers, subscribers, workers, the profiler) is started and
stopped the same way, so that a stuck child is always SIGKILLed in the end and
its output is always somewhere to read when something goes wrong.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from signal import SIGTERM
from types import TracebackType
from typing import Any, Self

__all__ = ["ChildProcess", "Managed", "stop_together", "wait_until_ready"]


def wait_until_ready(
    check: Callable[[], bool], what: str, timeout: float, process: subprocess.Popen[bytes]
) -> None:
    """Poll ``check`` until it is true; fail early if ``process`` exits first.

    An ``OSError`` from ``check`` (connection refused while the server binds)
    counts as not ready yet. ``check`` is asked before the exit status, so a
    child that was ready and then exited quickly is not reported as a failed start.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {timeout}s")


class Managed:
    """``with`` starts it and closes it."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ChildProcess(Managed):
    """A command run as a child process; stdout and stderr go to ``log_path``.

    ``start()`` returns once the child is ready: by default as soon as it runs;
    with ``ready_line``, once it printed that line; subclasses override
    ``ready()`` (a server answering on its port). It can be started again after
    it stopped. ``env`` (a copy of the environment unless given) and ``args``
    may be changed before ``start()``. ``close()`` stops it and removes its
    working directory (which holds the log unless ``log_path`` points elsewhere).

    The child runs in a session of its own, so a Ctrl-C in the terminal reaches
    only the Python process that started it, which then stops its children in
    order (the demo still reads Redis after Ctrl-C to print its summary).
    """

    name = "process"

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        ready_line: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ca-{self.name}-"))
        self.cwd = cwd
        self.log_path = log_path or self.workdir / f"{self.name}.log"
        self.ready_line = ready_line
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return self.args

    def popen_options(self) -> dict[str, Any]:
        """Extra ``subprocess.Popen`` arguments (e.g. ``user``) for subclasses."""
        return {}

    def ready(self) -> bool:
        return self.ready_line is None or any(
            line.strip() == self.ready_line for line in self.log().splitlines()
        )

    @property
    def pid(self) -> int | None:
        """The child's pid (also after it exited, until it is started again)."""
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def poll(self) -> int | None:
        """Its exit code, or None while it runs (or was never started)."""
        return self.process.poll() if self.process is not None else None

    def start(self) -> Self:
        if self.running():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self.popen_options(),
            )
        try:
            wait_until_ready(self.ready, self.describe(), self.start_timeout, self.process)
        except BaseException:
            self.kill()
            raise
        return self

    def describe(self) -> str:
        return self.name

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for it to exit (``subprocess.TimeoutExpired`` if it does not)."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float | None = None, *, sig: int = SIGTERM) -> int | None:
        """Send ``sig`` (SIGTERM), wait for it to exit, SIGKILL it if it does not.

        Returns its exit code (None if it was never started).
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def finish(self, timeout: float) -> int | None:
        """Give it ``timeout`` seconds to exit by itself, then stop it."""
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        return self.stop()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def stop_together(processes: Iterable[ChildProcess], timeout: float | None = None) -> None:
    """SIGTERM every running process first, then wait for each: they shut down in
    parallel instead of one after the other."""
    processes = list(processes)
    for process in processes:
        if process.running():
            process.signal(SIGTERM)
    for process in processes:
        process.stop(timeout)
