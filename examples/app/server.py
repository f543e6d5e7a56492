"""The example app's backend: a price board in SQLite, published through centrifugo-async.

This is the part to copy. It owns one table, ``objects(key, version, data)``;
every change runs in one transaction that also bumps the row's ``version``, and
only after the commit is the new version published with ``AsyncPublisher``.
The page loads ``GET /api/state`` (rows with their versions) and applies the
live updates through js-client's version gate, so late, repeated or reordered
deliveries never show an older price than the database holds.

Routes:

- ``GET /api/state``: ``{"items": [{"key", "version", "data"}, ...]}``
- ``POST /api/objects/{key}`` (JSON object body): merge the body into the
  object's data (create it if missing), bump its version, publish. ``200`` with
  ``{"key", "version", "data", "published": true}``; ``503`` with
  ``"published": false`` when the row was committed but could not be enqueued.
- ``POST /api/burst?n=200``: ``n`` random price changes, a few at a time.
- ``GET /api/config``: what the page needs (WebSocket URL, channel).
- ``/api/stack...``: kill and restart the local relay or Centrifugo, only when
  the launcher (``python -m examples.app``) passes its stack controls.

Every POST must be sent as ``Content-Type: application/json``: a plain HTML form
on another site cannot do that without a CORS preflight, which this app never
answers, so other pages open in the browser cannot drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import random
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from centrifugo_async import AsyncPublisher, CentrifugoAsyncError

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
MAX_BODY_BYTES = 8 * 1024
MAX_BURST = 2000
KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")

# Python 3.11 does not know .mjs; a module script served as text/plain is refused.
mimetypes.add_type("text/javascript", ".mjs")

PRODUCTS = [
    "Apples",
    "Apricots",
    "Bananas",
    "Blueberries",
    "Cherries",
    "Coconuts",
    "Dates",
    "Figs",
    "Grapes",
    "Kiwis",
    "Lemons",
    "Limes",
    "Mangoes",
    "Melons",
    "Oranges",
    "Peaches",
    "Pears",
    "Plums",
    "Raspberries",
    "Strawberries",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class StoredObject:
    key: str
    version: int
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.version, "data": self.data}


Change = Callable[[dict[str, Any] | None], dict[str, Any]]
"""Computes an object's new data from its current data (None: it does not exist yet)."""


class ObjectStore:
    """Versioned objects in SQLite. Blocking: call it from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def initialize(self, seed: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Create the table (WAL, so reads never wait for writes) and seed it when empty."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT COUNT(*) FROM objects").fetchone()[0] == 0:
                db.executemany(
                    "INSERT INTO objects (key, version, data) VALUES (?, 1, ?)",
                    [(key, json.dumps(data)) for key, data in seed],
                )
            db.execute("COMMIT")

    def all(self) -> list[StoredObject]:
        with contextlib.closing(self._connect()) as db:
            rows = db.execute("SELECT key, version, data FROM objects ORDER BY key").fetchall()
        return [StoredObject(key, version, json.loads(data)) for key, version, data in rows]

    def keys(self) -> list[str]:
        with contextlib.closing(self._connect()) as db:
            return [key for (key,) in db.execute("SELECT key FROM objects ORDER BY key")]

    def update(self, key: str, change: Change) -> StoredObject:
        """Apply ``change`` to ``key`` and bump its version, in one transaction.

        ``BEGIN IMMEDIATE`` takes the write lock before reading, so two updates of
        the same row can never both read version N and both write N + 1.
        """
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT version, data FROM objects WHERE key = ?", (key,)
                ).fetchone()
                current = json.loads(row[1]) if row else None
                version = row[0] + 1 if row else 1
                data = change(current)
                db.execute(
                    "INSERT INTO objects (key, version, data) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
                    "data = excluded.data",
                    (key, version, json.dumps(data)),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return StoredObject(key, version, data)


class StackControls(Protocol):
    """What the launcher lets the page do to the local services (demos and tests)."""

    def status(self) -> dict[str, Any]: ...
    def kill_relay(self) -> None: ...
    def start_relay(self) -> None: ...
    def restart_centrifugo(self) -> None: ...


@dataclass(frozen=True)
class AppSettings:
    db_path: Path
    redis_url: str
    ws_url: str
    shards: int = 4
    channel: str = "obj:prices"
    js_client_dir: Path = REPO_ROOT / "js-client"


def seed_products() -> list[tuple[str, dict[str, Any]]]:
    prices = random.Random(42)
    return [
        (name.lower(), {"name": name, "price_cents": prices.randrange(80, 900, 5)})
        for name in PRODUCTS
    ]


def jitter_price(current: dict[str, Any] | None) -> dict[str, Any]:
    data = dict(current or {})
    price = int(data.get("price_cents", 300))
    data["price_cents"] = max(50, price + random.randrange(-40, 45, 5))
    return data


class PriceBoard:
    """The app's logic: store first, publish after the commit."""

    def __init__(self, settings: AppSettings, publisher: AsyncPublisher) -> None:
        self.settings = settings
        self.store = ObjectStore(settings.db_path)
        self.publisher = publisher

    async def update(self, key: str, change: Change) -> tuple[StoredObject, str | None]:
        """Commit the change, then publish it. Returns the stored object and the
        publish error, if any.

        A failed publish leaves the row committed, and that is safe: the database
        is the source of truth and the page trusts versions, not messages. The
        next load of the page (or its next resync) shows the row, and the next
        update of the same object publishes a newer version that supersedes this
        one. A backend that cannot accept that gap writes the message into an
        outbox table in the same transaction and publishes from there.
        """
        stored = await run_in_threadpool(self.store.update, key, change)
        try:
            await self.publisher.publish(
                self.settings.channel, stored.data, key=stored.key, version=stored.version
            )
        except CentrifugoAsyncError as exc:
            return stored, f"{type(exc).__name__}: {exc}"
        return stored, None


def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415, "send Content-Type: application/json")


async def _json_object_body(request: Request) -> dict[str, Any]:
    _require_json(request)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise HTTPException(400, "body must be a JSON object (the fields to change)")
    price = value.get("price_cents", 1)
    if isinstance(price, bool) or not isinstance(price, int) or not 0 < price <= 10_000_000:
        raise HTTPException(400, "price_cents must be an integer in 1..10000000")
    if not isinstance(value.get("name", ""), str):
        raise HTTPException(400, "name must be a string")
    return value


def _board(request: Request) -> PriceBoard:
    board: PriceBoard = request.app.state.board
    return board


async def get_state(request: Request) -> Response:
    objects = await run_in_threadpool(_board(request).store.all)
    return JSONResponse(
        {"items": [obj.as_json() for obj in objects]}, headers={"Cache-Control": "no-store"}
    )


async def get_config(request: Request) -> Response:
    settings = _board(request).settings
    return JSONResponse(
        {
            "ws_url": settings.ws_url,
            "channel": settings.channel,
            "controls": request.app.state.controls is not None,
        }
    )


async def update_object(request: Request) -> Response:
    key = request.path_params["key"]
    if not KEY_PATTERN.fullmatch(key):
        raise HTTPException(400, f"key must match {KEY_PATTERN.pattern}")
    changes = await _json_object_body(request)

    def merge(current: dict[str, Any] | None) -> dict[str, Any]:
        merged = {**(current or {}), **changes}
        if len(json.dumps(merged)) > MAX_BODY_BYTES:  # raised inside the transaction: rollback
            raise HTTPException(413, f"the object would exceed {MAX_BODY_BYTES} bytes")
        return merged

    stored, error = await _board(request).update(key, merge)
    if error is not None:
        return JSONResponse(
            {**stored.as_json(), "published": False, "error": f"stored, not published: {error}"},
            status_code=503,
        )
    return JSONResponse({**stored.as_json(), "published": True})


async def burst(request: Request) -> Response:
    """``n`` random price changes over the existing objects, eight at a time."""
    _require_json(request)
    try:
        n = int(request.query_params.get("n", "200"))
    except ValueError as exc:
        raise HTTPException(400, "n must be an integer") from exc
    if not 1 <= n <= MAX_BURST:
        raise HTTPException(400, f"n must be between 1 and {MAX_BURST}")
    board = _board(request)
    keys = await run_in_threadpool(board.store.keys)
    if not keys:
        raise HTTPException(409, "no objects to update")
    limit = asyncio.Semaphore(8)
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with limit:
            _, error = await board.update(random.choice(keys), jitter_price)
            failed += error is not None

    await asyncio.gather(*(one() for _ in range(n)))
    return JSONResponse({"updated": n, "not_published": failed})


def _controls(request: Request) -> StackControls:
    controls: StackControls | None = request.app.state.controls
    if controls is None:
        raise HTTPException(404, "stack controls are only there when the launcher runs the stack")
    return controls


async def stack_status(request: Request) -> Response:
    status = await run_in_threadpool(_controls(request).status)
    return JSONResponse(status, headers={"Cache-Control": "no-store"})


async def stack_action(request: Request) -> Response:
    _require_json(request)
    controls = _controls(request)
    actions = {
        "relay/kill": controls.kill_relay,
        "relay/start": controls.start_relay,
        "centrifugo/restart": controls.restart_centrifugo,
    }
    action = actions.get(request.path_params["action"])
    if action is None:
        raise HTTPException(404, f"unknown action; one of {sorted(actions)}")
    await run_in_threadpool(action)
    return JSONResponse(await run_in_threadpool(controls.status))


async def index(request: Request) -> Response:
    return FileResponse(HERE / "static" / "index.html", headers={"Cache-Control": "no-cache"})


async def json_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: AppSettings, controls: StackControls | None = None) -> Starlette:
    centrifuge_build = settings.js_client_dir / "node_modules" / "centrifuge" / "build"
    if not (centrifuge_build / "index.mjs").is_file():
        raise FileNotFoundError(
            f"{centrifuge_build / 'index.mjs'} not found: run scripts/setup "
            f"(or `npm ci` in {settings.js_client_dir})"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        publisher = AsyncPublisher.from_url(settings.redis_url, shards=settings.shards)
        board = PriceBoard(settings, publisher)
        await run_in_threadpool(board.store.initialize, seed_products())
        app.state.board = board
        app.state.controls = controls
        try:
            yield
        finally:
            await publisher.close()

    routes = [
        Route("/", index),
        Route("/api/config", get_config),
        Route("/api/state", get_state),
        Route("/api/objects/{key}", update_object, methods=["POST"]),
        Route("/api/burst", burst, methods=["POST"]),
        Route("/api/stack", stack_status),
        Route("/api/stack/{action:path}", stack_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static")),
        # The page imports these through its import map: no bundler needed.
        Mount("/vendor/centrifuge", StaticFiles(directory=centrifuge_build)),
        Mount(
            "/vendor/centrifugo-async-client", StaticFiles(directory=settings.js_client_dir / "src")
        ),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: json_error}
    )
