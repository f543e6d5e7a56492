"""The stack controls across a process boundary (the outbox mode's supervised backend).

In the outbox mode the backend runs as a child of the launcher, so that it can
die (``?crash=after-commit``) while the stack lives on. The stack's controls
(``LocalStack.status`` and ``actions``) stay in the launcher: ``ControlServer``
serves them as JSON on 127.0.0.1, behind a random token, and the backend's
``RemoteControls`` calls it, so the page's stack panel and buttons work as in
the SQLite mode.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = ["TOKEN_HEADER", "ControlServer", "RemoteControls"]

TOKEN_HEADER = "X-Stack-Token"


class ControlServer:
    """``GET /status``, ``GET /actions`` and ``POST /<action>`` on a free loopback port."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        actions: Mapping[str, Callable[[], None]],
    ) -> None:
        self.token = secrets.token_urlsafe(24)
        self._status = status
        self._actions = dict(actions)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stack-controls", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: object) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _authorized(self) -> bool:
                token = self.headers.get(TOKEN_HEADER, "")
                if secrets.compare_digest(token, server.token):
                    return True
                self._reply(403, {"error": f"missing or wrong {TOKEN_HEADER}"})
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path == "/status":
                    self._reply(200, server._status())
                elif self.path == "/actions":
                    self._reply(200, sorted(server._actions))
                else:
                    self._reply(404, {"error": "GET /status or /actions"})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                action = server._actions.get(self.path.removeprefix("/"))
                if action is None:
                    self._reply(404, {"error": f"unknown action; one of {sorted(server._actions)}"})
                    return
                try:
                    action()
                except Exception as exc:
                    self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
                    return
                self._reply(200, server._status())

        return Handler


class RemoteControls:
    """``StackControls`` (server.py) for a backend whose stack lives in another process.

    Blocking, like ``LocalStack``: the app calls it from a thread.
    """

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self._client = httpx.Client(
            base_url=url, headers={TOKEN_HEADER: token}, timeout=timeout, trust_env=False
        )
        self._names: list[str] | None = None

    def _call(self, method: str, path: str) -> Any:
        reply = self._client.request(method, path)
        body = reply.json()
        if reply.status_code != 200:
            raise RuntimeError(f"stack control {path}: {body.get('error', reply.text)}")
        return body

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._call("GET", "/status")
        return status

    def actions(self) -> Mapping[str, Callable[[], None]]:
        if self._names is None:
            self._names = list(self._call("GET", "/actions"))
        return {name: partial(self._run, name) for name in self._names}

    def _run(self, name: str) -> None:
        self._call("POST", f"/{name}")

    def close(self) -> None:
        self._client.close()
