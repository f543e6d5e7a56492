"""Redis, Centrifugo and the relay on 127.0.0.1 for the example app, with the
controls its page (and its end-to-end test) use to break things on purpose.

With ``outbox=True`` also a private PostgreSQL cluster (a fresh database,
``price_board``, with the outbox schema applied as ``centrifugo-async outbox
init`` would) and the outbox forwarder, which the page can kill and start too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Self

import redis as redis_py

from centrifugo_async import Keyspace
from centrifugo_async.admin import collect_stats
from devstack import (
    DEV_API_KEY,
    CentrifugoServer,
    ForwarderProcess,
    PostgresServer,
    RedisServer,
    RelayProcess,
)

# A short lease so that a relay started after a SIGKILL takes the shards over
# within a few seconds (the default, 10 s, is meant for production).
RELAY_LEASE_TTL = "3"
DATABASE = "price_board"
# Every version reaches the page, so that what the page's version gate does
# (drop stale and repeated versions) shows; the relay's default (monotonic
# delivery) would drop injected old versions itself, as superseded.
RELAY_FRESHNESS = "*=all"


class LocalStack:
    """Starts Redis, then Centrifugo, then the relay; ``close()`` stops them in reverse."""

    def __init__(
        self,
        *,
        shards: int,
        redis_port: int | None = None,
        centrifugo_port: int | None = None,
        outbox: bool = False,
    ) -> None:
        self.shards = shards
        self.redis = RedisServer(redis_port)
        self.centrifugo = CentrifugoServer(centrifugo_port)
        self.relay = RelayProcess(
            self.redis.url,
            self.centrifugo.api_url,
            DEV_API_KEY,
            "--shards",
            str(shards),
            "--lease-ttl",
            RELAY_LEASE_TTL,
            "--freshness",
            RELAY_FRESHNESS,
        )
        self.postgres = PostgresServer() if outbox else None
        self.postgres_dsn: str | None = None
        self.forwarder: ForwarderProcess | None = None
        self._exit = ExitStack()
        self._lock = threading.Lock()
        self._client: redis_py.Redis | None = None

    def start(self) -> Self:
        try:
            self._exit.enter_context(self.redis)
            self._exit.enter_context(self.centrifugo)
            self._exit.callback(self.relay.close)
            self._exit.callback(self.relay.stop)
            self.relay.start()
            self._client = redis_py.Redis.from_url(self.redis.url, socket_timeout=2)
            self._exit.callback(self._client.close)
            if self.postgres is not None:
                self._start_outbox(self.postgres)
        except BaseException:
            self._exit.close()
            raise
        return self

    def _start_outbox(self, postgres: PostgresServer) -> None:
        """PostgreSQL, the app's database with the outbox schema, then the forwarder."""
        import psycopg

        from centrifugo_async.outbox import init_schema

        self._exit.enter_context(postgres)
        self.postgres_dsn = postgres.create_database(DATABASE)
        with psycopg.connect(self.postgres_dsn) as conn:
            init_schema(conn)
        self.forwarder = ForwarderProcess(
            self.postgres_dsn, self.redis.url, "--shards", str(self.shards)
        )
        self._exit.callback(self.forwarder.close)
        self._exit.callback(self.forwarder.stop)
        self.forwarder.start()

    def close(self) -> None:
        self._exit.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # The controls (StackControls in server.py). Blocking: the app calls them in a thread.

    def relay_pid(self) -> int | None:
        process = self.relay.process
        return process.pid if process is not None and process.poll() is None else None

    def forwarder_pid(self) -> int | None:
        running = self.forwarder is not None and self.forwarder.running()
        return self.forwarder.pid if running and self.forwarder is not None else None

    def actions(self) -> Mapping[str, Callable[[], None]]:
        actions = {
            "relay/kill": self.kill_relay,
            "relay/start": self.start_relay,
            "centrifugo/restart": self.restart_centrifugo,
        }
        if self.forwarder is not None:
            actions |= {
                "forwarder/kill": self.kill_forwarder,
                "forwarder/start": self.start_forwarder,
            }
        return actions

    def status(self) -> dict[str, Any]:
        queues: dict[str, int] | None = None
        if self._client is not None:
            try:
                stats = collect_stats(self._client, Keyspace(shards=self.shards))
            except redis_py.RedisError:
                pass
            else:
                queues = {
                    "queued": sum(s.queued for s in stats),
                    "in_flight": sum(s.in_flight for s in stats),
                    "delivered": sum(s.delivered for s in stats),
                    "dead_letters": sum(s.dead_letters for s in stats),
                }
        status: dict[str, Any] = {"relay_pid": self.relay_pid(), "queues": queues}
        if self.forwarder is not None:
            status |= {"forwarder_pid": self.forwarder_pid(), "outbox": self._outbox_backlog()}
        return status

    def _outbox_backlog(self) -> dict[str, int | None] | None:
        """The rows waiting for the forwarder and the oldest one's age (None: no answer)."""
        import psycopg

        from centrifugo_async.outbox import OutboxTable
        from centrifugo_async.outbox.stats import lane_backlog

        assert self.postgres_dsn is not None
        try:
            with psycopg.connect(self.postgres_dsn, connect_timeout=2) as conn:
                lanes = lane_backlog(conn, OutboxTable())
        except psycopg.Error:
            return None
        ages = [lane.oldest_age_ms for lane in lanes if lane.oldest_age_ms is not None]
        return {"rows": sum(lane.rows for lane in lanes), "oldest_age_ms": max(ages, default=None)}

    def kill_relay(self) -> None:
        """SIGKILL: no goodbye, its leases expire and its in-flight batch waits in Redis."""
        with self._lock:
            if self.relay_pid() is not None:
                self.relay.signal(signal.SIGKILL)
                self.relay.wait(timeout=10)

    def start_relay(self) -> None:
        with self._lock:
            if self.relay_pid() is None:
                self.relay.start()

    def kill_forwarder(self) -> None:
        """SIGKILL: its PostgreSQL sessions end, its lane locks go, rows wait in the outbox."""
        with self._lock:
            if self.forwarder is not None and self.forwarder_pid() is not None:
                self.forwarder.signal(signal.SIGKILL)
                self.forwarder.wait(timeout=10)

    def start_forwarder(self) -> None:
        with self._lock:
            if self.forwarder is not None and self.forwarder_pid() is None:
                self.forwarder.start()

    def restart_centrifugo(self) -> None:
        """Stop Centrifugo (clients are disconnected) and start it on the same port.

        It keeps history in memory, so the restarted one has a new stream epoch and
        the page's subscription cannot recover: it reloads, which is the point.
        """
        with self._lock:
            self.centrifugo.restart()
