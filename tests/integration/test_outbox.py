"""The outbox's SQL on a real PostgreSQL: writers (psycopg sync/async, SQLAlchemy), schema, CLI."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from centrifugo_async import Message, NotInTransaction, OutboxSchemaError, shard_for
from centrifugo_async import outbox as ob
from centrifugo_async.cli import main
from centrifugo_async.outbox import sqlalchemy as ob_sa
from centrifugo_async.protocol import decode_envelope
from devstack import free_port
from tests.support.outbox import metric_value, running_forwarder

pytestmark = pytest.mark.postgres


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    with psycopg.connect(postgres_dsn) as conn:
        ob.init_schema(conn)
    return postgres_dsn


def rows(dsn: str, table: str = '"centrifugo_outbox"') -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT id, shard, shards, envelope::text FROM {table} ORDER BY id"
        ).fetchall()


def keys_and_versions(dsn: str) -> list[tuple[str, int]]:
    return [(e.key, e.version) for e in (decode_envelope(r[3]) for r in rows(dsn))]


def test_a_row_exists_exactly_when_its_transaction_commits(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            row = ob.publish(conn, "obj:o", {"s": 1}, key="order:1", version=1, tags={"t": "x"})
        with pytest.raises(RuntimeError), conn.transaction():
            ob.publish(conn, "obj:o", {"s": 2}, key="order:1", version=2)
            raise RuntimeError("the application fails after publishing")
        ob.publish(conn, "obj:o", {"s": 3}, key="order:1", version=3)  # implicit transaction
        assert keys_and_versions(dsn) == [("order:1", 1)], "uncommitted rows are invisible"
        conn.rollback()
    stored = rows(dsn)
    assert keys_and_versions(dsn) == [("order:1", 1)]
    assert stored[0][1:3] == (shard_for("order:1", 16), 16)
    assert stored[0][3] == row.envelope
    assert decode_envelope(row.envelope).tags == {"t": "x"}


def test_an_autocommit_connection_outside_a_transaction_is_refused(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(NotInTransaction, match="autocommit"):
            ob.publish(conn, "obj:o", 1, key="k", version=1)
        with conn.transaction():
            ob.publish(conn, "obj:o", 1, key="k", version=1)
    assert keys_and_versions(dsn) == [("k", 1)]


def test_publish_many_keeps_the_callers_order_in_ids(dsn: str) -> None:
    outbox = ob.Outbox(shards=4)
    messages = [Message("obj:o", {"n": i}, f"k{i % 3}", i) for i in range(300)]
    with psycopg.connect(dsn) as conn, conn.transaction():
        written = outbox.publish_many(conn, messages)
        assert outbox.publish_many(conn, []) == []
    assert keys_and_versions(dsn) == [(m.key, m.version) for m in messages]
    assert [r[1] for r in rows(dsn)] == [w.shard for w in written]
    assert {r[2] for r in rows(dsn)} == {4}


def test_bad_input_fails_inside_the_transaction_and_writes_nothing(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(ValueError), conn.transaction():
        ob.publish_many(conn, [Message("obj:o", 1, "a", 1), Message("obj:o", object(), "b", 1)])
    assert rows(dsn) == []


async def test_the_async_twins(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            await ob.publish_async(conn, "obj:o", {"a": 1}, key="a", version=1)
            await ob.publish_many_async(conn, [Message("obj:o", {}, "b", v) for v in (1, 2)])
        await conn.set_autocommit(True)
        with pytest.raises(NotInTransaction):
            await ob.publish_async(conn, "obj:o", 1, key="c", version=1)
    assert keys_and_versions(dsn) == [("a", 1), ("b", 1), ("b", 2)]


def sqlalchemy_url(dsn: str, driver: str = "psycopg") -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


def test_sqlalchemy_core_connection_and_orm_session(dsn: str) -> None:
    engine = create_engine(sqlalchemy_url(dsn))
    try:
        with engine.begin() as conn:
            ob_sa.publish(conn, "obj:o", {"via": "core"}, key="a", version=1)
        with Session(engine) as session:
            ob_sa.publish_many(session, [Message("obj:o", {"via": "orm"}, "b", v) for v in (1, 2)])
            session.commit()
        with Session(engine) as session:
            ob_sa.publish(session, "obj:o", {}, key="c", version=1)
            session.rollback()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM centrifugo_outbox")).scalar() == 3
    finally:
        engine.dispose()
    assert keys_and_versions(dsn) == [("a", 1), ("b", 1), ("b", 2)]


async def test_sqlalchemy_async_connection(dsn: str) -> None:
    engine = create_async_engine(sqlalchemy_url(dsn))
    try:
        async with engine.begin() as conn:
            await ob_sa.publish_async(conn, "obj:o", {}, key="a", version=1)
            await ob_sa.publish_many_async(conn, [Message("obj:o", {}, "a", 2)])
    finally:
        await engine.dispose()
    assert keys_and_versions(dsn) == [("a", 1), ("a", 2)]


def test_init_is_idempotent_and_refuses_a_newer_schema(postgres_dsn: str) -> None:
    table = ob.OutboxTable("app.events_outbox")
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.commit()
        with pytest.raises(OutboxSchemaError, match="outbox init"):
            ob.check_schema(conn, table)
        assert ob.init_schema(conn, table) is True
        assert ob.init_schema(conn, table) is False
        assert ob.check_schema(conn, table) == ob.SCHEMA_VERSION
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app.events_outbox'::regclass"
            " AND NOT tgisinternal"
        ).fetchone()
        assert triggers == (1,)
        conn.execute(f"INSERT INTO {table.version_table} (version) VALUES (99)")
        conn.commit()
        with pytest.raises(OutboxSchemaError, match="newer"):
            ob.init_schema(conn, table)
        with pytest.raises(OutboxSchemaError, match="newer"):
            ob.check_schema(conn, table)


def test_the_trigger_notifies_once_per_inserting_statement(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn) as writer:
        received: list[psycopg.Notify] = []
        listener.add_notify_handler(received.append)  # notifies(timeout=) needs psycopg 3.2
        listener.execute('LISTEN "centrifugo_outbox"')
        with writer.transaction():
            ob.publish_many(writer, [Message("obj:o", 1, "k", v) for v in range(50)])
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            listener.execute("SELECT 1")  # a notification is read with the next reply
        listener.execute("SELECT 1")
        assert [n.channel for n in received] == ["centrifugo_outbox"]


def test_cli_init_print_and_stats(postgres_dsn: str) -> None:
    runner = CliRunner()
    printed = runner.invoke(main, ["outbox", "init", "--print", "--table", "x_outbox"])
    assert printed.exit_code == 0, printed.output
    assert 'CREATE TABLE IF NOT EXISTS "x_outbox"' in printed.output
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(printed.output)  # teams that run migrations themselves
        conn.commit()
        assert ob.check_schema(conn, ob.OutboxTable("x_outbox")) == 1

    env = {"CENTRIFUGO_ASYNC_OUTBOX_DSN": postgres_dsn}
    created = runner.invoke(main, ["outbox", "init"], env=env)
    assert created.exit_code == 0 and "created" in created.output
    again = runner.invoke(main, ["outbox", "init"], env=env)
    assert again.exit_code == 0 and "already there" in again.output

    with psycopg.connect(postgres_dsn) as conn, conn.transaction():
        ob.publish_many(conn, [Message("obj:o", 1, f"k{i}", 1) for i in range(20)])
    stats = runner.invoke(main, ["outbox", "stats", "--json"], env=env)
    assert stats.exit_code == 0, stats.output
    body = json.loads(stats.output)
    assert body["rows"] == 20
    assert sum(lane["rows"] for lane in body["lanes"]) == 20
    assert all(lane["owner"] is None for lane in body["lanes"])
    table = runner.invoke(main, ["outbox", "stats"], env=env)
    assert "total rows=20" in table.output and "forwarders (0): none" in table.output


def test_cli_errors_are_one_clear_line(postgres_dsn: str) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["outbox", "stats", "--dsn", postgres_dsn])
    assert missing.exit_code == 1
    assert "no outbox table 'centrifugo_outbox'" in missing.output
    assert "Traceback" not in missing.output
    unreachable = runner.invoke(main, ["outbox", "init", "--dsn", "postgresql://127.0.0.1:1/x"])
    assert unreachable.exit_code == 1 and "PostgreSQL:" in unreachable.output
    no_dsn = runner.invoke(main, ["outbox", "init"], env={"CENTRIFUGO_ASYNC_OUTBOX_DSN": ""})
    assert no_dsn.exit_code == 2 and "--dsn" in no_dsn.output


async def test_forwarder_serves_health_and_metrics_and_shows_in_stats(
    dsn: str, redis_url: str
) -> None:
    port = free_port()
    with psycopg.connect(dsn) as conn, conn.transaction():
        ob.publish_many(conn, [Message("obj:o", 1, f"k{i}", 1) for i in range(30)])
    async with running_forwarder(
        dsn, redis_url, metrics_port=port, forwarder_id="fwd-under-test"
    ) as metrics:

        def ready() -> bool:
            forwarded = metric_value(metrics, "centrifugo_async_outbox_forwarded_total")
            try:
                owned = get(port, "/health")["owned_lanes"]
            except urllib.error.URLError:
                return False  # not serving yet
            return bool(owned == 16 and forwarded == 30)

        await asyncio.to_thread(poll, ready, 20)
        health = await asyncio.to_thread(get, port, "/health")
        assert health["status"] == "ok", health
        text_metrics = await asyncio.to_thread(get_text, port, "/metrics")
        assert "centrifugo_async_outbox_forwarded_total 30.0" in text_metrics
        result = CliRunner().invoke(main, ["outbox", "stats", "--dsn", dsn, "--json"])
        body = json.loads(result.output)
        assert body["rows"] == 0
        assert {lane["owner"] for lane in body["lanes"]} == {"fwd-under-test"}
        assert len(body["lanes"]) == 16


def get_text(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return str(reply.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def get(port: int, path: str) -> dict[str, Any]:
    return dict(json.loads(get_text(port, path)))


def poll(condition: Any, within: float) -> None:
    """Ask ``condition()`` every 100 ms until it is true (a thread: it does blocking I/O)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
