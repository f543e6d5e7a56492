"""``GET /metrics``, ``GET /health`` and ``GET /livez`` on one small HTTP server in a daemon thread.

Shared by the long-running services (the relay, the outbox forwarder): each
keeps its own Prometheus registry and answers ``/health`` from a ``report``
callable that reads its last sample, so a health check never waits on Redis,
PostgreSQL or Centrifugo itself. ``/livez`` asks only whether the service's
event loop still runs callbacks, for a liveness probe: a service waiting for
Redis or Centrifugo is alive, one whose loop is stuck is not. Binds to
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .exceptions import RelayFatalError

__all__ = ["LIVENESS_TIMEOUT", "HealthReport", "StatusServer", "loop_responds"]

LIVENESS_TIMEOUT = 2.0
"""Seconds ``/livez`` waits for the event loop to run a callback before it answers 503."""

HealthReport = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (healthy, JSON body): 200 when healthy, 503 otherwise."""


class StatusServer:
    """Serves ``GET /metrics`` (Prometheus text), ``GET /health`` (JSON) and, given the
    service's event ``loop``, ``GET /livez``."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        report: HealthReport,
        log: logging.Logger,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        handler = _handler(registry, report, loop)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise RelayFatalError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror} "
                "(choose another --metrics-port, or 0 to disable)"
            ) from None
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._log = log
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._log.info("serving /metrics, /health and /livez", extra={"port": self.port})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def loop_responds(loop: asyncio.AbstractEventLoop, timeout: float = LIVENESS_TIMEOUT) -> bool:
    """Whether ``loop`` runs a callback within ``timeout`` (call from another thread)."""
    ran: concurrent.futures.Future[None] = concurrent.futures.Future()
    try:
        loop.call_soon_threadsafe(ran.set_result, None)
        ran.result(timeout)
    except (RuntimeError, TimeoutError):  # the loop is closed, or it did not get to it
        return False
    return True


def _handler(
    registry: CollectorRegistry,
    report: HealthReport,
    loop: asyncio.AbstractEventLoop | None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif self.path == "/health":
                healthy, body = report()
                self._send(200 if healthy else 503, "application/json", json.dumps(body).encode())
            elif self.path == "/livez" and loop is not None:
                if loop_responds(loop):
                    self._send(200, "text/plain", b"ok\n")
                else:
                    self._send(503, "text/plain", b"event loop not responding\n")
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the service's own log

    return Handler
