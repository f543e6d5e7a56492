"""The example app's backend: a price board in SQLite, published through centrifugo-async.

This is the part to copy. It owns one table, ``objects(key, version, data,
deleted)``; every change runs in one transaction that also bumps the row's
``version``, and only after the commit is the new version published with
``AsyncPublisher``. A delete is a change too: the row stays as a *tombstone*
(``deleted = 1``) with its bumped version, so versions keep counting if the
object comes back, and snapshots can tell the page when an object was deleted.
The page loads ``GET /api/state`` (rows and tombstones with their versions) and
applies the live updates and deletes through js-client's version gate, so late,
repeated or reordered deliveries never show an older price, or a deleted
object, than the database holds.

With ``AppSettings.postgres_dsn`` (the launcher's ``--outbox``) the same routes
run on ``OutboxBoard`` (outbox_board.py): the rows live in PostgreSQL and each
message is written to the outbox table in the transaction of its change.

Routes:

- ``GET /api/state``: ``{"items": [{"key", "version", "data"}, ...],
  "deleted": [{"key", "version"}, ...]}``
- ``GET /api/objects/{key}``: one object, ``{"key", "version", "data"}``, or its
  tombstone ``{"key", "version", "deleted": true}``; ``404`` when it never existed.
- ``POST /api/objects/{key}`` (JSON object body): merge the body into the
  object's data (create it if missing or deleted), bump its version, publish.
  ``200`` with ``{"key", "version", "data", "published": true}``; ``503`` with
  ``"published": false`` when the row was committed but could not be enqueued.
  ``?crash=after-commit`` (only with ``crash_hooks``, the outbox mode's
  supervised backend): the process SIGKILLs itself right after the commit.
- ``DELETE /api/objects/{key}``: delete the object (bump its version, keep a
  tombstone), publish the delete. ``200`` with ``{"key", "version", "deleted":
  true, "published": true}``, ``404`` when there is no such object, ``503`` as above.
- ``POST /api/burst?n=200``: ``n`` random price changes, a few at a time.
- ``GET /api/delivery``: ``{"queued", "in_flight", "oldest_age_ms"}`` (plus
  ``"outbox"``, the rows not forwarded yet, in the outbox mode): what waits
  between this backend and the pages, and for how long (the page shows "delayed"
  rather than "live" when the oldest message waits more than a second).
- ``GET /api/config``: what the page needs (WebSocket URL, channel, mode).
- ``/api/stack...``: kill and restart the local relay, Centrifugo (and the
  outbox forwarder), only when the launcher (``python -m examples.app``) passes
  its stack controls.

Every POST must be sent as ``Content-Type: application/json``, and deletes use
the ``DELETE`` method: a plain HTML form on another site can do neither without
a CORS preflight, which this app never answers, so other pages open in the
browser cannot drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import random
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from centrifugo_async import AsyncPublisher, CentrifugoAsyncError, Keyspace
from centrifugo_async.admin import collect_stats

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
    data TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class StoredObject:
    key: str
    version: int
    data: dict[str, Any] | None
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        if self.deleted:
            return {"key": self.key, "version": self.version, "deleted": True}
        return {"key": self.key, "version": self.version, "data": self.data}


Change = Callable[[dict[str, Any] | None], dict[str, Any]]
"""Computes an object's new data from its current data (None: it does not exist,
or it was deleted)."""


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
            columns = {row[1] for row in db.execute("PRAGMA table_info(objects)")}
            if "deleted" not in columns:  # a database from before deletes
                db.execute("ALTER TABLE objects ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0")
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT COUNT(*) FROM objects").fetchone()[0] == 0:
                db.executemany(
                    "INSERT INTO objects (key, version, data) VALUES (?, 1, ?)",
                    [(key, json.dumps(data)) for key, data in seed],
                )
            db.execute("COMMIT")

    def all(self) -> list[StoredObject]:
        """Every object and every tombstone, by key."""
        with contextlib.closing(self._connect()) as db:
            rows = db.execute(
                "SELECT key, version, data, deleted FROM objects ORDER BY key"
            ).fetchall()
        return [_stored(*row) for row in rows]

    def get(self, key: str) -> StoredObject | None:
        """One object or its tombstone; None when it never existed."""
        with contextlib.closing(self._connect()) as db:
            row = db.execute(
                "SELECT key, version, data, deleted FROM objects WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else _stored(*row)

    def keys(self) -> list[str]:
        """The keys of the objects that exist (tombstones left out)."""
        with contextlib.closing(self._connect()) as db:
            query = "SELECT key FROM objects WHERE deleted = 0 ORDER BY key"
            return [key for (key,) in db.execute(query)]

    def update(self, key: str, change: Change) -> StoredObject:
        """Apply ``change`` to ``key`` and bump its version, in one transaction.

        ``BEGIN IMMEDIATE`` takes the write lock before reading, so two updates of
        the same row can never both read version N and both write N + 1.
        """
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT version, data, deleted FROM objects WHERE key = ?", (key,)
                ).fetchone()
                current = json.loads(row[1]) if row and not row[2] else None
                version = row[0] + 1 if row else 1  # counting on after a delete
                data = change(current)
                db.execute(
                    "INSERT INTO objects (key, version, data, deleted) VALUES (?, ?, ?, 0) "
                    "ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
                    "data = excluded.data, deleted = 0",
                    (key, version, json.dumps(data)),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return StoredObject(key, version, data)

    def delete(self, key: str) -> StoredObject | None:
        """Delete ``key``: bump its version and keep the row as a tombstone, in one
        transaction. None when there is no such object (or it is deleted already).

        The tombstone keeps the version: a page that loads the state learns when
        the object was deleted, and if it comes back, its versions go on from
        there instead of starting at 1 below what pages already saw.
        """
        with contextlib.closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT version FROM objects WHERE key = ? AND deleted = 0", (key,)
                ).fetchone()
                if row is None:
                    db.execute("ROLLBACK")
                    return None
                version = row[0] + 1
                db.execute(
                    "UPDATE objects SET version = ?, data = 'null', deleted = 1 WHERE key = ?",
                    (version, key),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return StoredObject(key, version, None, deleted=True)


def _stored(key: str, version: int, data: str, deleted: int) -> StoredObject:
    return StoredObject(key, version, None if deleted else json.loads(data), bool(deleted))


class StackControls(Protocol):
    """What the launcher lets the page do to the local services (demos and tests)."""

    def status(self) -> dict[str, Any]: ...
    def actions(self) -> Mapping[str, Callable[[], None]]:
        """``{"relay/kill": ..., "relay/start": ..., "centrifugo/restart": ..., ...}``."""
        ...


@dataclass(frozen=True, kw_only=True)
class AppSettings:
    """Where the rows live: ``db_path`` (SQLite, the default mode) or ``postgres_dsn``
    (the outbox mode, outbox_board.py); exactly one of the two."""

    db_path: Path | None = None
    postgres_dsn: str | None = None
    redis_url: str
    ws_url: str
    shards: int = 4
    channel: str = "obj:prices"
    js_client_dir: Path = REPO_ROOT / "js-client"
    crash_hooks: bool = False
    """Accept ``?crash=after-commit``: only when a supervisor restarts the backend."""

    def __post_init__(self) -> None:
        if (self.db_path is None) == (self.postgres_dsn is None):
            raise ValueError("AppSettings needs exactly one of db_path and postgres_dsn")

    @property
    def mode(self) -> str:
        return "sqlite" if self.postgres_dsn is None else "outbox"


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


class Store(Protocol):
    """What the routes read, whichever database holds the rows. Blocking: call it
    from a thread."""

    def initialize(self, seed: Iterable[tuple[str, dict[str, Any]]]) -> None: ...
    def all(self) -> list[StoredObject]: ...
    def get(self, key: str) -> StoredObject | None: ...
    def keys(self) -> list[str]: ...


AfterCommit = Callable[[], None]
"""Called right after a change committed, before anything else (the crash hook)."""


def queue_delivery(queues: redis.Redis, shards: int) -> dict[str, int | None]:
    """``{"queued", "in_flight", "oldest_age_ms"}``: the figures of ``centrifugo-async
    stats``, summed over the shards. Blocking."""
    stats = collect_stats(queues, Keyspace(shards=shards))
    ages = [s.oldest_age_ms for s in stats if s.oldest_age_ms is not None]
    return {
        "queued": sum(s.queued for s in stats),
        "in_flight": sum(s.in_flight for s in stats),
        "oldest_age_ms": max(ages, default=None),
    }


class Board(Protocol):
    """The app's logic as the routes see it: ``PriceBoard`` (SQLite, publish after
    the commit) or ``OutboxBoard`` (PostgreSQL, the outbox in the transaction)."""

    @property
    def settings(self) -> AppSettings: ...
    @property
    def store(self) -> Store: ...
    def delivery(self) -> dict[str, int | None]: ...
    async def update(
        self, key: str, change: Change, after_commit: AfterCommit | None = None
    ) -> tuple[StoredObject, str | None]: ...
    async def delete(self, key: str) -> tuple[StoredObject | None, str | None]: ...
    async def close(self) -> None: ...


class PriceBoard:
    """The app's logic: store first, publish after the commit."""

    def __init__(
        self, settings: AppSettings, publisher: AsyncPublisher, queues: redis.Redis
    ) -> None:
        if settings.db_path is None:
            raise ValueError("PriceBoard needs AppSettings.db_path")
        self.settings = settings
        self.store = ObjectStore(settings.db_path)
        self.publisher = publisher
        self.queues = queues

    def delivery(self) -> dict[str, int | None]:
        """What waits in the queues for the relay, and the oldest message's age (ms).

        A page that shows "live" while updates wait in Redis (the relay is down,
        or far behind) would be lying: the page asks this to say "delayed"
        instead. Blocking: call it from a thread.
        """
        return queue_delivery(self.queues, self.settings.shards)

    async def update(
        self, key: str, change: Change, after_commit: AfterCommit | None = None
    ) -> tuple[StoredObject, str | None]:
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
        if after_commit is not None:
            after_commit()
        try:
            await self.publisher.publish(
                self.settings.channel, stored.data, key=stored.key, version=stored.version
            )
        except CentrifugoAsyncError as exc:
            return stored, f"{type(exc).__name__}: {exc}"
        return stored, None

    async def delete(self, key: str) -> tuple[StoredObject | None, str | None]:
        """Commit the delete, then publish it, as ``update`` does; None if no such object."""
        stored = await run_in_threadpool(self.store.delete, key)
        if stored is None:
            return None, None
        try:
            await self.publisher.delete(self.settings.channel, key=key, version=stored.version)
        except CentrifugoAsyncError as exc:
            return stored, f"{type(exc).__name__}: {exc}"
        return stored, None

    async def close(self) -> None:
        await self.publisher.close()
        self.queues.close()


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


def _board(request: Request) -> Board:
    board: Board = request.app.state.board
    return board


async def get_state(request: Request) -> Response:
    objects = await run_in_threadpool(_board(request).store.all)
    return JSONResponse(
        {
            "items": [obj.as_json() for obj in objects if not obj.deleted],
            "deleted": [{"key": obj.key, "version": obj.version} for obj in objects if obj.deleted],
        },
        headers={"Cache-Control": "no-store"},
    )


def _key(request: Request) -> str:
    key: str = request.path_params["key"]
    if not KEY_PATTERN.fullmatch(key):
        raise HTTPException(400, f"key must match {KEY_PATTERN.pattern}")
    return key


async def get_object(request: Request) -> Response:
    stored = await run_in_threadpool(_board(request).store.get, _key(request))
    if stored is None:
        raise HTTPException(404, "no such object")
    return JSONResponse(stored.as_json(), headers={"Cache-Control": "no-store"})


async def delete_object(request: Request) -> Response:
    stored, error = await _board(request).delete(_key(request))
    if stored is None:
        raise HTTPException(404, "no such object")
    if error is not None:
        return JSONResponse(
            {**stored.as_json(), "published": False, "error": f"stored, not published: {error}"},
            status_code=503,
        )
    return JSONResponse({**stored.as_json(), "published": True})


async def get_delivery(request: Request) -> Response:
    try:
        delivery = await run_in_threadpool(_board(request).delivery)
    except redis.RedisError as exc:
        raise HTTPException(503, f"Redis: {exc}") from exc
    return JSONResponse(delivery, headers={"Cache-Control": "no-store"})


async def get_config(request: Request) -> Response:
    settings = _board(request).settings
    return JSONResponse(
        {
            "ws_url": settings.ws_url,
            "channel": settings.channel,
            "controls": request.app.state.controls is not None,
            "mode": settings.mode,
            "crash_hooks": settings.crash_hooks,
        }
    )


def _crash_hook(request: Request) -> AfterCommit | None:
    """``?crash=after-commit``: SIGKILL this process right after the commit.

    Only with ``crash_hooks`` (the outbox mode's supervised backend, which is
    restarted): it shows that a backend dying between its commit and anything
    after it loses no update, because the outbox row committed with the change.
    """
    crash = request.query_params.get("crash")
    if crash is None:
        return None
    if not _board(request).settings.crash_hooks:
        raise HTTPException(400, "crash hooks are off (only the --outbox launcher turns them on)")
    if crash != "after-commit":
        raise HTTPException(400, "crash must be after-commit")
    return lambda: os.kill(os.getpid(), signal.SIGKILL)


async def update_object(request: Request) -> Response:
    key = _key(request)
    changes = await _json_object_body(request)
    crash = _crash_hook(request)

    def merge(current: dict[str, Any] | None) -> dict[str, Any]:
        merged = {**(current or {}), **changes}
        if len(json.dumps(merged)) > MAX_BODY_BYTES:  # raised inside the transaction: rollback
            raise HTTPException(413, f"the object would exceed {MAX_BODY_BYTES} bytes")
        return merged

    stored, error = await _board(request).update(key, merge, crash)
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
    actions = controls.actions()
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
        queues = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        board: Board
        if settings.postgres_dsn is None:
            publisher = AsyncPublisher.from_url(settings.redis_url, shards=settings.shards)
            board = PriceBoard(settings, publisher, queues)
        else:
            from .outbox_board import OutboxBoard

            board = OutboxBoard(settings, queues)
        try:
            await run_in_threadpool(board.store.initialize, seed_products())
            app.state.board = board
            app.state.controls = controls
            yield
        finally:
            await board.close()

    routes = [
        Route("/", index),
        Route("/api/config", get_config),
        Route("/api/state", get_state),
        Route("/api/objects/{key}", update_object, methods=["POST"]),
        Route("/api/objects/{key}", get_object, methods=["GET"]),
        Route("/api/objects/{key}", delete_object, methods=["DELETE"]),
        Route("/api/burst", burst, methods=["POST"]),
        Route("/api/delivery", get_delivery),
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
