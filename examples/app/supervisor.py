"""The outbox mode's backend as a supervised child process that may die and comes back.

The launcher binds the app's port and keeps the listening socket; the backend
(``python -m examples.app.backend``) inherits it and serves it. When the
backend dies (``?crash=after-commit`` SIGKILLs it right after a commit), the
supervisor starts a new one on the same socket: connections made meanwhile
wait in the socket's backlog, so the page keeps its URL and its WebSocket (to
Centrifugo, which never went away), while the forwarder delivers what the dead
backend committed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from devstack import ChildProcess

from .server import AppSettings

__all__ = ["SETTINGS_ENV", "BackendProcess", "Supervisor", "settings_from_json"]

SETTINGS_ENV = "EXAMPLE_APP_SETTINGS"
"""The backend's ``AppSettings`` and its control server's address, as JSON."""

READY_LINE = "backend ready"
REPO_ROOT = Path(__file__).resolve().parents[2]


def settings_to_json(settings: AppSettings, controls_url: str, controls_token: str) -> str:
    fields = {
        name: str(value) if isinstance(value, Path) else value
        for name, value in dataclasses.asdict(settings).items()
    }
    return json.dumps({"settings": fields, "controls": [controls_url, controls_token]})


def settings_from_json(text: str) -> tuple[AppSettings, str, str]:
    """``(settings, controls_url, controls_token)`` from ``settings_to_json``'s output."""
    document = json.loads(text)
    fields: dict[str, Any] = document["settings"]
    for name in ("db_path", "js_client_dir"):
        if fields.get(name) is not None:
            fields[name] = Path(fields[name])
    url, token = document["controls"]
    return AppSettings(**fields), url, token


class BackendProcess(ChildProcess):
    """``python -m examples.app.backend`` serving the inherited listening socket."""

    name = "backend"

    def __init__(self, sock: socket.socket, settings_json: str) -> None:
        self.sock = sock
        self._ready_before = 0
        super().__init__(
            [sys.executable, "-m", "examples.app.backend", "--fd", str(sock.fileno())],
            env={**os.environ, SETTINGS_ENV: settings_json, "PYTHONUNBUFFERED": "1"},
            cwd=REPO_ROOT,
            ready_line=READY_LINE,
            start_timeout=60.0,
        )

    def popen_options(self) -> dict[str, Any]:
        return {"pass_fds": (self.sock.fileno(),)}

    def _ready_lines(self) -> int:
        return sum(line.strip() == READY_LINE for line in self.log().splitlines())

    def start(self) -> BackendProcess:
        # The log is appended to across restarts: wait for a ready line of this run.
        self._ready_before = self._ready_lines()
        super().start()
        return self

    def ready(self) -> bool:
        return self._ready_lines() > self._ready_before


class Supervisor:
    """Starts the backend and starts it again whenever it exits, until ``close()``.

    A backend that dies while it starts (a crashing request waited in the
    socket's backlog) is started again too; after ``max_failed_starts`` such
    starts in a row the supervisor gives up and stops the launcher.
    """

    def __init__(self, backend: BackendProcess, max_failed_starts: int = 3) -> None:
        self.backend = backend
        self.max_failed_starts = max_failed_starts
        self.restarts = 0
        self._lock = threading.Lock()
        self._closing = False
        self._watcher = threading.Thread(target=self._watch, name="backend-watcher", daemon=True)

    def start(self) -> Supervisor:
        self.backend.start()
        self._watcher.start()
        return self

    def status(self) -> dict[str, Any]:
        """The running backend's pid (None while it is down) and how often it came back."""
        pid = self.backend.pid if self.backend.running() else None
        return {"backend_pid": pid, "backend_restarts": self.restarts}

    def _watch(self) -> None:
        failed_starts = 0
        while True:
            process = self.backend.process
            assert process is not None
            code = process.wait()
            with self._lock:
                if self._closing:
                    return
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
                print(f"backend pid {process.pid} exited ({how}): starting it again", flush=True)
                self.restarts += 1
                try:
                    self.backend.start()
                except Exception as exc:
                    failed_starts += 1
                    if failed_starts < self.max_failed_starts:
                        continue
                    print(
                        f"backend failed to start {failed_starts} times: {exc}; stopping",
                        flush=True,
                    )
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                failed_starts = 0
                print(f"backend pid {self.backend.pid} serves again", flush=True)

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self.backend.close()
