"""A tiny backend for the browser demo of centrifugo-async (standard library only).

It owns a SQLite table ``objects(key, version, data)``. ``POST /update`` bumps a
row's version in one transaction and then publishes the new version through
``centrifugo_async.Publisher``; ``GET /state`` returns every row with its
version, which is what the page loads before it trusts live updates. The page
itself (``static/``) and two ES modules it imports (centrifuge-js and the
js-client helper, from ``js-client/``) are served from here too.

    python examples/browser_demo/server.py --port 8080 \\
        --redis-url redis://127.0.0.1:6379/0 --shards 16 \\
        --ws-url ws://127.0.0.1:8000/connection/websocket

The publish happens after the commit: the database stays the source of truth
for versions, and a publish that fails only delays the update until the next
reload (a production backend would use an outbox to close that gap).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import signal
import sqlite3
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from centrifugo_async import CentrifugoAsyncError, Publisher

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
MAX_BODY_BYTES = 64 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
)
"""

BUMP_VERSION = """
INSERT INTO objects (key, version, data) VALUES (?, 1, ?)
ON CONFLICT (key) DO UPDATE SET version = version + 1, data = excluded.data
RETURNING version
"""


class Demo:
    """The demo's state: database path, publisher and page settings."""

    def __init__(self, db_path: Path, publisher: Publisher, channel: str, ws_url: str) -> None:
        self.db_path = db_path
        self.publisher = publisher
        self.channel = channel
        self.ws_url = ws_url
        with self.connect() as db:
            db.execute(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path, timeout=10, isolation_level=None)

    def state(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute("SELECT key, version, data FROM objects ORDER BY key").fetchall()
        return [{"key": k, "version": v, "data": json.loads(d)} for k, v, d in rows]

    def update(self, key: str, data: Any) -> int:
        """Store ``data`` under ``key`` at the next version, then publish that version."""
        db = self.connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            (version,) = db.execute(BUMP_VERSION, (key, json.dumps(data))).fetchone()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        self.publisher.publish(self.channel, data, key=key, version=version)
        return int(version)


class Handler(BaseHTTPRequestHandler):
    demo: Demo
    static_mounts: dict[str, Path]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/state":
            self.send_json({"items": self.demo.state()})
        elif path == "/config":
            self.send_json({"ws_url": self.demo.ws_url, "channel": self.demo.channel})
        else:
            self.send_static("/static/index.html" if path == "/" else path)

    def do_POST(self) -> None:
        if self.path != "/update":
            self.send_json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_BODY_BYTES:
                raise ValueError("body must be 1..64 KiB of JSON")
            body = json.loads(self.rfile.read(length))
            key, data = body["key"], body.get("data")
            if not isinstance(key, str) or not key:
                raise ValueError("`key` must be a non-empty string")
        except (ValueError, KeyError, TypeError) as exc:
            self.send_json({"error": f"bad request: {exc}"}, HTTPStatus.BAD_REQUEST)
            return
        try:
            version = self.demo.update(key, data)
        except CentrifugoAsyncError as exc:
            message = f"stored, but not published: {exc}"
            self.send_json({"error": message}, HTTPStatus.SERVICE_UNAVAILABLE)
            return
        self.send_json({"key": key, "version": version})

    def send_json(self, payload: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_static(self, path: str) -> None:
        file = self.resolve_static(path)
        if file is None:
            self.send_json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        body = file.read_bytes()
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.suffix in {".js", ".mjs"}:
            content_type = "text/javascript"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def resolve_static(self, path: str) -> Path | None:
        """The file ``path`` names under one of the mounts, never outside it."""
        for prefix, root in self.static_mounts.items():
            if path.startswith(prefix):
                candidate = (root / path[len(prefix) :]).resolve()
                if candidate.is_relative_to(root.resolve()) and candidate.is_file():
                    return candidate
        return None

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("DEMO_ACCESS_LOG"):
            super().log_message(format, *args)


def main() -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("DEMO_PORT", "8080")),
        help="port on 127.0.0.1; 0 picks a free one [env: DEMO_PORT]",
    )
    parser.add_argument(
        "--redis-url", default=env("CENTRIFUGO_ASYNC_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument(
        "--ws-url",
        default=env("DEMO_WS_URL", "ws://127.0.0.1:8000/connection/websocket"),
        help="Centrifugo WebSocket URL the page connects to",
    )
    parser.add_argument("--channel", default="obj:demo")
    parser.add_argument("--db", type=Path, default=HERE / "demo.sqlite3")
    parser.add_argument(
        "--js-client",
        type=Path,
        default=REPO_ROOT / "js-client",
        help="js-client directory (with node_modules installed)",
    )
    args = parser.parse_args()

    centrifuge_build = args.js_client / "node_modules" / "centrifuge" / "build"
    if not (centrifuge_build / "index.mjs").is_file():
        sys.exit(f"{centrifuge_build}/index.mjs not found: run `npm ci` in {args.js_client}")

    publisher = Publisher.from_url(args.redis_url, shards=args.shards)
    Handler.demo = Demo(args.db, publisher, args.channel, args.ws_url)
    Handler.static_mounts = {
        "/static/": HERE / "static",
        "/node_modules/centrifuge/build/": centrifuge_build,
        "/js-client/src/": args.js_client / "src",
    }
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        publisher.close()


if __name__ == "__main__":
    main()
