"""The outbox table's name and every SQL statement run against it, in one place.

The statements are plain text with psycopg's ``%s`` placeholders (the DB-API
style Django's cursors share), so the writer, the forwarder, the operator tools
and any other driver all run the same SQL. Names are quoted here and nowhere
else: a table may be schema-qualified (``app.centrifugo_outbox``) and every
derived name (index, version table, trigger, notification channel, advisory
lock class) follows from it.
"""

from __future__ import annotations

import attrs

from ..protocol.routing import fnv1a_32

__all__ = ["DEFAULT_TABLE", "OutboxTable"]

DEFAULT_TABLE = "centrifugo_outbox"
_MAX_IDENTIFIER_BYTES = 63


def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a PostgreSQL string literal (standard_conforming_strings)."""
    return "'" + text.replace("'", "''") + "'"


def _check_name(_: object, __: attrs.Attribute[str], name: str) -> None:
    parts = name.split(".") if isinstance(name, str) else []
    longest_suffix = len("_schema_version")
    if not 1 <= len(parts) <= 2 or any(not p or p != p.strip() for p in parts):
        raise ValueError(
            f"invalid outbox table name {name!r}: expected 'table' or 'schema.table', "
            "without empty parts or surrounding spaces"
        )
    if len(parts[-1].encode()) + longest_suffix > _MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"outbox table name {parts[-1]!r} is too long: its derived names (index, "
            f"version table) must fit PostgreSQL's {_MAX_IDENTIFIER_BYTES} bytes, so at "
            f"most {_MAX_IDENTIFIER_BYTES - longest_suffix} bytes"
        )


@attrs.frozen
class OutboxTable:
    """One outbox table: its quoted names and the SQL the library runs against it."""

    name: str = attrs.field(default=DEFAULT_TABLE, validator=_check_name)

    @property
    def _schema(self) -> str | None:
        return self.name.split(".")[0] if "." in self.name else None

    @property
    def _base(self) -> str:
        return self.name.split(".")[-1]

    def _qualified(self, base: str) -> str:
        schema = self._schema
        prefix = f"{quote_identifier(schema)}." if schema is not None else ""
        return prefix + quote_identifier(base)

    @property
    def table(self) -> str:
        """The quoted (and schema-qualified, if given) table name."""
        return self._qualified(self._base)

    @property
    def version_table(self) -> str:
        """The table recording which schema versions were applied."""
        return self._qualified(f"{self._base}_schema_version")

    @property
    def index(self) -> str:
        """The ``(shard, id)`` index, unqualified (an index lives in its table's schema)."""
        return quote_identifier(f"{self._base}_shard_id")

    @property
    def notify_function(self) -> str:
        return self._qualified(f"{self._base}_notify")

    @property
    def trigger_name(self) -> str:
        """The NOTIFY trigger's name, unquoted (triggers are named per table)."""
        return f"{self._base}_notify"

    @property
    def trigger(self) -> str:
        return quote_identifier(self.trigger_name)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel: the table name as given."""
        return self.name

    @property
    def lock_class(self) -> int:
        """The first key of this table's advisory locks (the second is the lane).

        Derived from the name, so two outbox tables in one database never share
        locks; kept below 2**31 so it is the same number as an int4 and as an oid.
        """
        return fnv1a_32(f"centrifugo-async outbox {self.name}".encode()) & 0x7FFFFFFF

    # --- the writer -----------------------------------------------------------------

    @property
    def insert_one(self) -> str:
        """Insert one row: parameters shard, shards, envelope."""
        return f"INSERT INTO {self.table} (shard, shards, envelope) VALUES (%s, %s, %s::json)"

    @property
    def insert_many(self) -> str:
        """Insert many rows in one statement, their ids in array order.

        Parameters: shards, shard[], envelope[]. ``ORDER BY`` the ordinality makes
        the identity values follow the caller's order, which per key is the
        order the forwarder keeps.
        """
        return (
            f"INSERT INTO {self.table} (shard, shards, envelope) "
            "SELECT u.shard, %s, u.envelope::json "
            "FROM unnest(%s::smallint[], %s::text[]) WITH ORDINALITY AS u(shard, envelope, n) "
            "ORDER BY u.n"
        )

    @property
    def insert_named(self) -> str:
        """``insert_one`` with named parameters (``:shard``), for SQLAlchemy's ``text()``."""
        return (
            f"INSERT INTO {self.table} (shard, shards, envelope) "
            "VALUES (:shard, :shards, CAST(:envelope AS json))"
        )

    # --- the forwarder ----------------------------------------------------------------

    @property
    def take_batch(self) -> str:
        """Delete up to ``limit`` oldest rows of each lane and return them: parameters
        lane[], limit.

        Returns id, shard, shards, envelope (text), created_ms, in no particular
        order. The forwarder runs it inside the transaction that enqueues the
        rows and commits after the enqueue, so a failure rolls the deletion back.

        The rows are picked by the ``(shard, id)`` index, one lane at a time, and
        deleted by their physical address (``ctid``) within the same statement.
        Looking them up again by id is what a queue table's statistics make
        dangerous: taken while the table was empty, they make the planner treat
        a backlog of 100,000 rows as one row and choose plans that rescan the
        table, or the whole ``(shard, id)`` index, once per id (PostgreSQL before
        17 does that for ``id = ANY(...)`` too). A forwarder catching up on a
        backlog spent seconds per sweep that way (``scripts/bench --suite
        outbox``: about 2,000 rows/s instead of 50,000).
        """
        t = self.table
        return (
            f"DELETE FROM {t} WHERE ctid = ANY(ARRAY("
            "SELECT o.ctid FROM unnest(%s::smallint[]) AS l(lane) CROSS JOIN LATERAL ("
            f"SELECT ctid FROM {t} WHERE shard = l.lane ORDER BY id LIMIT %s) AS o)) "
            "RETURNING id, shard, shards, envelope::text, "
            "(extract(epoch FROM created_at) * 1000)::bigint"
        )

    @property
    def lanes_in_use(self) -> str:
        """The distinct lanes holding rows, by a loose index scan (one probe per lane)."""
        t = self.table
        return (
            "WITH RECURSIVE lanes(shard) AS ("
            f"(SELECT shard FROM {t} ORDER BY shard LIMIT 1) "
            "UNION ALL "
            f"SELECT (SELECT o.shard FROM {t} AS o WHERE o.shard > lanes.shard "
            "ORDER BY o.shard LIMIT 1) FROM lanes WHERE lanes.shard IS NOT NULL) "
            "SELECT shard FROM lanes WHERE shard IS NOT NULL"
        )

    @property
    def try_lock_lanes(self) -> str:
        """Take the free lanes among lane[] (session locks): returns the lanes taken."""
        return (
            f"SELECT l FROM unnest(%s::int[]) AS l WHERE pg_try_advisory_lock({self.lock_class}, l)"
        )

    @property
    def listen(self) -> str:
        return f"LISTEN {quote_identifier(self.channel)}"

    # --- the operator ---------------------------------------------------------------

    @property
    def backlog(self) -> str:
        """Rows and the age of the oldest row (ms) of each lane that holds rows."""
        return (
            "SELECT shard, count(*), "
            "(extract(epoch FROM (clock_timestamp() - min(created_at))) * 1000)::bigint "
            f"FROM {self.table} GROUP BY shard ORDER BY shard"
        )

    @property
    def lane_owners(self) -> str:
        """Which session holds each lane's lock: lane, pid, application_name."""
        return (
            "SELECT l.objid::int, l.pid, coalesce(a.application_name, '') "
            "FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            f"AND l.classid = {self.lock_class}::oid "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY 1"
        )
