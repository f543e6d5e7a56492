"""The forwarder's sweep on a backlog whose table statistics say the outbox is empty.

A queue table's statistics are whatever ANALYZE last saw, often an empty table.
A forwarder catching up on a backlog (after a Redis outage, say) then runs its
sweep against 20,000 rows that the planner believes are none. Looking the
taken rows up again by id let the planner rescan the table, or the whole
``(shard, id)`` index, once per id: seconds per sweep (the outbox benchmark's
drain fell from about 50,000 rows/s to 2,000). The sweep deletes the rows it
picked by their address instead, which is one TID lookup each whatever the
statistics say; this checks that plan, generic and custom, and what it takes.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from centrifugo_async import Message
from centrifugo_async import outbox as ob
from centrifugo_async.outbox import OutboxTable

pytestmark = pytest.mark.postgres

BACKLOG = 20_000
LANES = list(range(16))
LIMIT = 500


@pytest.fixture
def stale_backlog(postgres_dsn: str) -> str:
    """An outbox analyzed while empty (autovacuum off, so it stays so), then filled."""
    table = OutboxTable()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        ob.init_schema(conn)
        conn.execute(f"ALTER TABLE {table.table} SET (autovacuum_enabled = off)")
        conn.execute(f"ANALYZE {table.table}")
        with conn.transaction():
            ob.publish_many(
                conn,
                (
                    Message("obj:backlog", {"n": n}, f"order:{n % 1000}", n // 1000 + 1)
                    for n in range(BACKLOG)
                ),
            )
        (believed,) = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table.name,)
        ).fetchone() or (None,)
        assert believed is not None and believed <= 0, "the statistics must still say empty"
    return postgres_dsn


def _plan(conn: psycopg.Connection[Any], mode: str) -> str:
    """EXPLAIN ANALYZE of the sweep's statement under ``plan_cache_mode = mode`` (rolled back)."""
    conn.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Identifier(mode)))
    conn.execute(
        sql.SQL("PREPARE take(smallint[], int) AS {}").format(
            sql.SQL(OutboxTable().take_batch.replace("%s", "${}").format(1, 2))
        )
    )
    try:
        with conn.transaction(force_rollback=True):
            lines = conn.execute(
                sql.SQL("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE take({}, {})").format(
                    sql.Literal(LANES), sql.Literal(LIMIT)
                )
            ).fetchall()
    finally:
        conn.execute("DEALLOCATE take")
    return "\n".join(line for (line,) in lines)


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_a_sweep_deletes_its_rows_by_address_whatever_the_statistics(
    stale_backlog: str, mode: str
) -> None:
    with psycopg.connect(stale_backlog, autocommit=True) as conn:
        plan = _plan(conn, mode)
    scans = [line.strip() for line in plan.splitlines() if "Tid Scan" in line]
    assert len(scans) == 1, plan
    assert f"rows={len(LANES) * LIMIT} loops=1" in scans[0], plan


def test_a_sweep_takes_the_oldest_rows_of_each_lane(stale_backlog: str) -> None:
    with psycopg.connect(stale_backlog, autocommit=True) as conn:
        before = conn.execute(
            "SELECT shard, id FROM centrifugo_outbox ORDER BY shard, id"
        ).fetchall()
        oldest = [row for lane in LANES for row in [r for r in before if r[0] == lane][:LIMIT]]
        with conn.transaction():
            taken = conn.execute(OutboxTable().take_batch, (LANES, LIMIT)).fetchall()
        after = conn.execute("SELECT count(*) FROM centrifugo_outbox").fetchone()
    assert sorted((shard, row_id) for row_id, shard, *_ in taken) == oldest
    assert after == (BACKLOG - len(oldest),)
