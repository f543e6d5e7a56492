"""The outbox backlog per lane, and which forwarder holds each lane.

``centrifugo-async outbox stats`` prints it; the forwarder's sampler reads the
same query for its gauges and ``/health``. Ages come from ``created_at`` (the
start of the writing transaction) against the database's clock, so the
application's and the forwarder's clocks do not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .table import OutboxTable

if TYPE_CHECKING:
    import psycopg

__all__ = ["APPLICATION_PREFIX", "LaneBacklog", "lane_backlog", "lane_backlog_async"]

APPLICATION_PREFIX = "ca-outbox:"
"""Forwarders name their PostgreSQL sessions ``ca-outbox:<forwarder id>`` (``application_name``)."""


@attrs.frozen
class LaneBacklog:
    """One lane at one moment."""

    lane: int
    rows: int
    oldest_age_ms: int | None
    """Age of the oldest row (None when the lane is empty)."""
    owner: str | None
    """The forwarder holding the lane's lock (its application_name, else its pid)."""


def _merge(backlog: Sequence[Any], owners: Sequence[Any]) -> list[LaneBacklog]:
    owner_of = {int(lane): (name or f"pid {pid}") for lane, pid, name in owners}
    counts = {int(lane): (int(rows), int(age)) for lane, rows, age in backlog}
    return [
        LaneBacklog(
            lane=lane,
            rows=counts.get(lane, (0, 0))[0],
            oldest_age_ms=max(0, counts[lane][1]) if lane in counts else None,
            owner=owner_of.get(lane),
        )
        for lane in sorted(set(owner_of) | set(counts))
    ]


def _forwarder_name(application_name: str) -> str:
    return application_name.removeprefix(APPLICATION_PREFIX)


def lane_backlog(conn: psycopg.Connection[Any], table: OutboxTable) -> list[LaneBacklog]:
    """Every lane that holds rows or is owned by a forwarder, in lane order."""
    backlog = conn.execute(table.backlog).fetchall()
    owners = conn.execute(table.lane_owners).fetchall()
    return _merge(backlog, [(lane, pid, _forwarder_name(name)) for lane, pid, name in owners])


async def lane_backlog_async(
    conn: psycopg.AsyncConnection[Any], table: OutboxTable
) -> list[LaneBacklog]:
    """The asyncio twin of ``lane_backlog``."""
    backlog = await (await conn.execute(table.backlog)).fetchall()
    owners = await (await conn.execute(table.lane_owners)).fetchall()
    return _merge(backlog, [(lane, pid, _forwarder_name(name)) for lane, pid, name in owners])
