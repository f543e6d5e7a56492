"""The example app's outbox mode (examples/app/outbox_board.py) against a real PostgreSQL.

Each change and its outbox row commit together, under the product's row lock;
the backend never publishes to Redis itself, the forwarder does; and the
supervised backend, crashed right after a commit, loses nothing and comes back.
The browser test is js-client/test/app-outbox-e2e.test.js.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis

from centrifugo_async import Keyspace, decode_envelope, outbox, shard_for
from examples.app.controls import ControlServer, RemoteControls
from examples.app.server import (
    MAX_BODY_BYTES,
    PRODUCTS,
    AppSettings,
    create_app,
    seed_products,
)
from examples.app.supervisor import BackendProcess, Supervisor, settings_to_json
from tests.support.outbox import running_forwarder

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

JSON = {"Content-Type": "application/json"}
SHARDS = 4
WS_URL = "ws://127.0.0.1:1/connection/websocket"


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    """A fresh database with the outbox schema, as `centrifugo-async outbox init` leaves it."""
    with psycopg.connect(postgres_dsn) as conn:
        outbox.init_schema(conn)
    return postgres_dsn


def settings_for(dsn: str, redis_url: str, **overrides: Any) -> AppSettings:
    return AppSettings(
        postgres_dsn=dsn, redis_url=redis_url, ws_url=WS_URL, shards=SHARDS, **overrides
    )


@pytest.fixture
async def client(dsn: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app in the outbox mode with its lifespan running, over an in-process transport."""
    app = create_app(settings_for(dsn, redis_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        yield client


def outbox_envelopes(dsn: str) -> list[tuple[str, int, bool, Any]]:
    """The waiting outbox rows in id order, as (key, version, deleted, data)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT envelope::text FROM centrifugo_outbox ORDER BY id").fetchall()
    envelopes = [decode_envelope(text) for (text,) in rows]
    return [(e.key, e.version, e.deleted, e.data) for e in envelopes]


def database_row(dsn: str, key: str) -> tuple[int, Any, bool] | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT version, data, deleted FROM objects WHERE key = %s", (key,)
        ).fetchone()
    return None if row is None else (int(row[0]), row[1], bool(row[2]))


def queued(redis_url: str, key: str) -> list[bytes]:
    queue = Keyspace(shards=SHARDS).shard(shard_for(key, SHARDS)).queue
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.lrange(queue, 0, -1))  # type: ignore[arg-type]
    finally:
        client.close()


async def test_seeded_from_postgresql(client: httpx.AsyncClient, dsn: str) -> None:
    body = (await client.get("/api/state")).json()
    assert [item["key"] for item in body["items"]] == sorted(name.lower() for name in PRODUCTS)
    assert {item["version"] for item in body["items"]} == {1}
    assert body["deleted"] == []
    assert outbox_envelopes(dsn) == [], "seeding publishes nothing"
    config = (await client.get("/api/config")).json()
    assert (config["mode"], config["crash_hooks"]) == ("outbox", False)


async def test_a_change_and_its_outbox_row_commit_together_and_nothing_goes_to_redis(
    client: httpx.AsyncClient, dsn: str, redis_url: str
) -> None:
    reply = await client.post("/api/objects/apples", json={"price_cents": 199}, headers=JSON)
    assert reply.status_code == 200
    assert reply.json() == {
        "key": "apples",
        "version": 2,
        "data": {"name": "Apples", "price_cents": 199},
        "published": True,
    }
    assert database_row(dsn, "apples") == (2, {"name": "Apples", "price_cents": 199}, False)
    assert outbox_envelopes(dsn) == [("apples", 2, False, {"name": "Apples", "price_cents": 199})]
    assert queued(redis_url, "apples") == [], "the forwarder publishes, not the backend"


async def test_a_refused_change_leaves_neither_the_row_nor_an_outbox_row(
    client: httpx.AsyncClient, dsn: str
) -> None:
    assert (
        await client.post("/api/objects/kiwis", json={"notes": "a" * 5000}, headers=JSON)
    ).status_code == 200
    refused = await client.post("/api/objects/kiwis", json={"more": "b" * 5000}, headers=JSON)
    assert refused.status_code == 413
    kiwis = database_row(dsn, "kiwis")
    assert kiwis is not None and kiwis[0] == 2 and "more" not in kiwis[1]
    assert [(key, version) for key, version, _, _ in outbox_envelopes(dsn)] == [("kiwis", 2)]
    # A new key whose first change is refused inside the transaction (its body fits
    # the limit, compact; the stored object would not) leaves no placeholder behind.
    compact = json.dumps({f"k{n}": 1 for n in range(900)}, separators=(",", ":")).encode()
    assert len(compact) < MAX_BODY_BYTES
    reply = await client.post("/api/objects/durians", content=compact, headers=JSON)
    assert reply.status_code == 413 and "would exceed" in reply.json()["error"]
    assert database_row(dsn, "durians") is None
    assert (await client.get("/api/objects/durians")).status_code == 404


async def test_a_delete_keeps_a_tombstone_and_writes_the_delete_to_the_outbox(
    client: httpx.AsyncClient, dsn: str
) -> None:
    deleted = await client.delete("/api/objects/figs")
    assert deleted.json() == {"key": "figs", "version": 2, "deleted": True, "published": True}
    assert (await client.delete("/api/objects/figs")).status_code == 404
    assert (await client.delete("/api/objects/durians")).status_code == 404
    assert (await client.get("/api/state")).json()["deleted"] == [{"key": "figs", "version": 2}]
    back = await client.post("/api/objects/figs", json={"price_cents": 99}, headers=JSON)
    assert (back.json()["version"], back.json()["data"]) == (3, {"price_cents": 99})
    assert outbox_envelopes(dsn) == [
        ("figs", 2, True, None),
        ("figs", 3, False, {"price_cents": 99}),
    ]


async def test_concurrent_changes_of_one_key_are_serialised_by_its_row_lock(
    client: httpx.AsyncClient, dsn: str
) -> None:
    """Every change gets its own version and the outbox holds them in version order:
    each writer waited for the previous one's commit. A new key too (its placeholder
    row is what the creators queue on)."""

    async def change(key: str, n: int) -> int:
        reply = await client.post(f"/api/objects/{key}", json={"price_cents": n}, headers=JSON)
        assert reply.status_code == 200, reply.text
        version: int = reply.json()["version"]
        return version

    for key, first in (("pears", 2), ("durians", 1)):
        versions = await asyncio.gather(*(change(key, n) for n in range(1, 13)))
        assert sorted(versions) == list(range(first, first + 12))
        in_outbox = [version for k, version, _, _ in outbox_envelopes(dsn) if k == key]
        assert in_outbox == sorted(versions), "outbox order is commit order"


async def test_delivery_counts_the_rows_waiting_in_the_outbox(client: httpx.AsyncClient) -> None:
    nothing = (await client.get("/api/delivery")).json()
    assert nothing == {"queued": 0, "in_flight": 0, "oldest_age_ms": None, "outbox": 0}
    await client.post("/api/objects/limes", json={"price_cents": 120}, headers=JSON)
    await client.delete("/api/objects/pears")
    waiting = (await client.get("/api/delivery")).json()
    assert (waiting["outbox"], waiting["queued"]) == (2, 0)
    assert 0 <= waiting["oldest_age_ms"] < 60_000


async def test_the_crash_hook_is_off_unless_the_supervisor_turns_it_on(
    client: httpx.AsyncClient, dsn: str
) -> None:
    path = "/api/objects/apples?crash=after-commit"
    reply = await client.post(path, json={"price_cents": 1}, headers=JSON)
    assert reply.status_code == 400 and "crash hooks are off" in reply.json()["error"]
    assert database_row(dsn, "apples") == (1, dict(seed_products())["apples"], False)


async def test_the_forwarder_moves_committed_changes_to_the_relay_queues(
    client: httpx.AsyncClient, dsn: str, redis_url: str
) -> None:
    await client.post("/api/objects/plums", json={"price_cents": 310}, headers=JSON)
    await client.delete("/api/objects/plums")
    async with running_forwarder(dsn, redis_url, shards=SHARDS):
        async with asyncio.timeout(20):
            while len(queued(redis_url, "plums")) < 2:  # noqa: ASYNC110 - another task's work
                await asyncio.sleep(0.05)
    envelopes = [decode_envelope(raw) for raw in queued(redis_url, "plums")]
    assert [(e.version, e.deleted, e.data) for e in envelopes] == [
        (2, False, {"name": "Plums", "price_cents": 310}),
        (3, True, None),
    ]
    assert outbox_envelopes(dsn) == []


@pytest.fixture
def supervised(dsn: str, redis_url: str) -> Iterator[tuple[str, Supervisor]]:
    """The backend as the launcher runs it in the outbox mode: a child process on a
    socket the test keeps, crash hooks on, restarted by a ``Supervisor``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    supervisor: Supervisor | None = None

    def status() -> dict[str, Any]:  # as the launcher composes it
        assert supervisor is not None
        return {"relay_pid": None, **supervisor.status()}

    controls = ControlServer(status, {}).start()
    settings = settings_for(dsn, redis_url, crash_hooks=True)
    backend = BackendProcess(sock, settings_to_json(settings, controls.url, controls.token))
    supervisor = Supervisor(backend)
    try:
        supervisor.start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", supervisor
    finally:
        supervisor.close()
        controls.close()
        sock.close()


def test_a_backend_killed_right_after_its_commit_loses_nothing_and_comes_back(
    supervised: tuple[str, Supervisor], dsn: str
) -> None:
    url, supervisor = supervised
    first_pid = supervisor.backend.pid
    with httpx.Client(base_url=url, timeout=30) as http:
        reply = http.post("/api/objects/apples", json={"price_cents": 201}, headers=JSON)
        assert reply.headers["connection"] == "close", "no connection is reused across a crash"
        with pytest.raises(httpx.RemoteProtocolError):
            http.post(
                "/api/objects/apples?crash=after-commit", json={"price_cents": 202}, headers=JSON
            )
        # Committed, with its outbox row, before the process died.
        assert database_row(dsn, "apples") == (3, {"name": "Apples", "price_cents": 202}, False)
        assert [version for _, version, _, _ in outbox_envelopes(dsn)] == [2, 3]
        # The next request waits in the socket's backlog for the next backend.
        state = http.get("/api/objects/apples").json()
        assert state["version"] == 3
        assert http.get("/api/stack").json() == {
            "relay_pid": None,
            "backend_pid": supervisor.backend.pid,
            "backend_restarts": 1,
        }
    assert supervisor.backend.pid != first_pid
    assert supervisor.backend.running()


def test_remote_controls_need_the_token() -> None:
    killed: list[str] = []
    server = ControlServer(lambda: {"ok": True}, {"relay/kill": lambda: killed.append("relay")})
    server.start()
    try:
        with contextlib.closing(RemoteControls(server.url, server.token)) as controls:
            assert sorted(controls.actions()) == ["relay/kill"]
            controls.actions()["relay/kill"]()
            assert killed == ["relay"]
            assert controls.status() == {"ok": True}
        intruder = RemoteControls(server.url, "wrong")
        with contextlib.closing(intruder), pytest.raises(RuntimeError, match="X-Stack-Token"):
            intruder.actions()["relay/kill"]()
        assert killed == ["relay"]
    finally:
        server.close()
