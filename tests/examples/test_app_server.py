"""The example app's backend (examples/app/server.py) without a browser: versions
bump in the database, the envelope carries them, and a failed publish leaves the
row committed. The browser test is js-client/test/app-e2e.test.js."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from centrifugo_async import Keyspace, decode_envelope, shard_for
from devstack import free_port
from examples.app.server import PRODUCTS, AppSettings, create_app

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
SHARDS = 4


@contextlib.asynccontextmanager
async def app_client(tmp_path: Path, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an HTTP client talking to it in-process."""
    settings = AppSettings(
        db_path=tmp_path / "app.sqlite3",
        redis_url=redis_url,
        ws_url="ws://127.0.0.1:1/connection/websocket",
        shards=SHARDS,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        yield client


@pytest.fixture
async def client(tmp_path: Path, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(tmp_path, redis_url) as client:
        yield client


async def state(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get("/api/state")).json()["items"]
    return items


def queued(redis_url: str, key: str) -> list[bytes]:
    queue = Keyspace(shards=SHARDS).shard(shard_for(key, SHARDS)).queue
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.lrange(queue, 0, -1))  # type: ignore[arg-type]
    finally:
        client.close()


async def test_seeded_state(client: httpx.AsyncClient) -> None:
    items = await state(client)
    assert [item["key"] for item in items] == sorted(name.lower() for name in PRODUCTS)
    assert {item["version"] for item in items} == {1}
    assert all(set(item["data"]) == {"name", "price_cents"} for item in items)


async def test_update_bumps_the_version_and_publishes_it(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    first = (
        await client.post("/api/objects/apples", json={"price_cents": 199}, headers=JSON)
    ).json()
    second = (
        await client.post("/api/objects/apples", json={"price_cents": 205}, headers=JSON)
    ).json()
    assert (first["version"], second["version"]) == (2, 3)
    assert second["data"] == {"name": "Apples", "price_cents": 205}
    assert second["published"] is True

    envelopes = [decode_envelope(raw) for raw in queued(redis_url, "apples")]
    assert [(e.key, e.version, e.data["price_cents"]) for e in envelopes] == [
        ("apples", 2, 199),
        ("apples", 3, 205),
    ]
    assert {e.channel for e in envelopes} == {"obj:prices"}
    by_key = {item["key"]: item for item in await state(client)}
    assert by_key["apples"]["version"] == 3


async def test_a_new_key_starts_at_version_1(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/objects/durians", json={"name": "Durians"}, headers=JSON)
    assert reply.json()["version"] == 1


async def test_objects_stay_bounded(client: httpx.AsyncClient) -> None:
    big = {"notes": "a" * 5000}
    assert (await client.post("/api/objects/kiwis", json=big, headers=JSON)).status_code == 200
    reply = await client.post("/api/objects/kiwis", json={"more": "b" * 5000}, headers=JSON)
    assert reply.status_code == 413
    kiwis = next(item for item in await state(client) if item["key"] == "kiwis")
    assert kiwis["version"] == 2, "the refused change was rolled back"
    assert "more" not in kiwis["data"]


async def test_burst_bumps_versions_by_n(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/burst?n=50", headers=JSON)
    assert reply.json() == {"updated": 50, "not_published": 0}
    items = await state(client)
    assert sum(item["version"] for item in items) == len(PRODUCTS) + 50


async def test_a_failed_publish_leaves_the_row_committed(tmp_path: Path) -> None:
    # Nothing listens there: the publisher cannot enqueue.
    async with app_client(tmp_path, f"redis://127.0.0.1:{free_port()}/0") as client:
        reply = await client.post("/api/objects/figs", json={"price_cents": 333}, headers=JSON)
        assert reply.status_code == 503
        body = reply.json()
        assert (body["version"], body["published"]) == (2, False)
        assert "not published" in body["error"]
        by_key = {item["key"]: item for item in await state(client)}
        assert by_key["figs"]["version"] == 2
        assert by_key["figs"]["data"]["price_cents"] == 333


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/api/objects/apples", b'{"price_cents": 1}', {}, 415),
        ("/api/objects/apples", b'{"price_cents": 1}', {"Content-Type": "text/plain"}, 415),
        ("/api/objects/apples", b"[1, 2]", JSON, 400),
        ("/api/objects/apples", b"{nope", JSON, 400),
        ("/api/objects/Bad%20Key", b"{}", JSON, 400),
        ("/api/objects/apples", b'{"price_cents": "cheap"}', JSON, 400),
        ("/api/objects/apples", b'{"price_cents": 0}', JSON, 400),
        ("/api/objects/apples", b'{"name": 7}', JSON, 400),
        ("/api/objects/apples", b'{"x": "' + b"a" * 9000 + b'"}', JSON, 413),
        ("/api/burst?n=0", b"", JSON, 400),
        ("/api/burst?n=many", b"", JSON, 400),
        ("/api/burst", b"", {}, 415),
        ("/api/stack/relay/kill", b"", JSON, 404),
        ("/api/objects/apples?crash=after-commit", b'{"price_cents": 1}', JSON, 400),
    ],
)
async def test_refused_requests(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    reply = await client.post(path, content=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert "error" in reply.json()
    assert {item["version"] for item in await state(client)} == {1}


async def test_a_delete_keeps_a_tombstone_publishes_it_and_versions_go_on(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    await client.post("/api/objects/figs", json={"price_cents": 250}, headers=JSON)  # v2
    deleted = await client.delete("/api/objects/figs")
    assert deleted.status_code == 200
    assert deleted.json() == {"key": "figs", "version": 3, "deleted": True, "published": True}
    assert (await client.delete("/api/objects/figs")).status_code == 404  # already gone

    body = (await client.get("/api/state")).json()
    assert "figs" not in {item["key"] for item in body["items"]}
    assert body["deleted"] == [{"key": "figs", "version": 3}]
    assert (await client.get("/api/objects/figs")).json() == {
        "key": "figs",
        "version": 3,
        "deleted": True,
    }

    envelopes = [decode_envelope(raw) for raw in queued(redis_url, "figs")]
    assert [(e.version, e.deleted, e.data) for e in envelopes] == [
        (2, False, {"name": "Figs", "price_cents": 250}),
        (3, True, None),
    ]

    back = (await client.post("/api/objects/figs", json={"price_cents": 99}, headers=JSON)).json()
    assert (back["version"], back["data"]) == (4, {"price_cents": 99})  # starts afresh, at 4
    body = (await client.get("/api/state")).json()
    assert body["deleted"] == []
    assert (await client.get("/api/objects/figs")).json()["version"] == 4


async def test_burst_leaves_deleted_objects_alone(client: httpx.AsyncClient) -> None:
    await client.delete("/api/objects/kiwis")
    await client.post("/api/burst?n=30", headers=JSON)
    body = (await client.get("/api/state")).json()
    assert body["deleted"] == [{"key": "kiwis", "version": 2}]
    assert "kiwis" not in {item["key"] for item in body["items"]}


async def test_unknown_and_bad_keys_for_get_and_delete(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/objects/durians")).status_code == 404
    assert (await client.delete("/api/objects/durians")).status_code == 404
    assert (await client.get("/api/objects/Bad%20Key")).status_code == 400
    assert (await client.delete("/api/objects/Bad%20Key")).status_code == 400
    assert (await client.get("/api/objects/apples")).json()["version"] == 1


async def test_a_database_from_before_deletes_is_upgraded(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "app.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE objects (key TEXT PRIMARY KEY, version INTEGER, data TEXT)")
        db.execute("""INSERT INTO objects VALUES ('old', 4, '{"name": "Old"}')""")
        db.commit()
    async with app_client(tmp_path, redis_url) as client:
        body = (await client.get("/api/state")).json()
        assert body == {
            "items": [{"key": "old", "version": 4, "data": {"name": "Old"}}],
            "deleted": [],
        }
        assert (await client.delete("/api/objects/old")).json()["version"] == 5


async def test_delivery_says_what_waits_in_the_queues_and_for_how_long(
    client: httpx.AsyncClient,
) -> None:
    """No relay runs here: what the app publishes waits, and ages."""
    nothing = await client.get("/api/delivery")
    assert nothing.json() == {"queued": 0, "in_flight": 0, "oldest_age_ms": None}
    assert nothing.headers["cache-control"] == "no-store"
    await client.post("/api/objects/limes", json={"price_cents": 120}, headers=JSON)
    await client.post("/api/objects/pears", json={"price_cents": 130}, headers=JSON)
    waiting = (await client.get("/api/delivery")).json()
    assert (waiting["queued"], waiting["in_flight"]) == (2, 0)
    assert 0 <= waiting["oldest_age_ms"] < 60_000


async def test_delivery_without_redis_is_an_error_not_a_guess(tmp_path: Path) -> None:
    async with app_client(tmp_path, f"redis://127.0.0.1:{free_port()}/0") as client:
        reply = await client.get("/api/delivery")
        assert reply.status_code == 503 and reply.json()["error"].startswith("Redis: ")
