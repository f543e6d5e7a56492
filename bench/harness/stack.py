"""The services of one run: a fresh Redis and a fresh Centrifugo, started through devstack,
and for a database system a fresh PostgreSQL.

Centrifugo is configured for the system under test: a larger per-connection
send queue for every system, for the ``stream`` systems its built-in
``redis_stream`` consumer reading the streams the producer writes, and for the
``postgresql`` system its built-in ``postgresql`` consumer reading the outbox
table the writers fill.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from types import TracebackType
from typing import Any, Self

import redis

from bench.procstats import cpu_seconds, tree_cpu_seconds
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer

from .database import Database, consumer_config
from .systems import System

__all__ = [
    "CONSUMER_GROUP",
    "LIST_KEY",
    "QUEUE_MAX_SIZE",
    "STREAM",
    "Stack",
    "stream_names",
]

LIST_KEY = "centrifugo.publish"
"""The list the naive workers pop (and the relay's key prefix)."""
STREAM = "centrifugo.stream"
CONSUMER_GROUP = "centrifugo"
QUEUE_MAX_SIZE = 512 * 2**20
"""Centrifugo's per-connection send queue (default 1 MB). The subscriber can lag
by more than a megabyte at full speed; the default would disconnect it as slow."""


def stream_names(streams: int) -> list[str]:
    return [STREAM] if streams == 1 else [f"{STREAM}:{i}" for i in range(streams)]


def centrifugo_extra_config(
    system: System | None, redis_server: RedisServer, database: Database | None = None
) -> dict[str, Any]:
    """What the run changes in devstack's Centrifugo config.

    For a ``stream`` system it also creates the consumer group at id 0 on every
    stream: Centrifugo would create it at ``$`` (new messages only).
    """
    extra: dict[str, Any] = {
        "client": {"queue_max_size": QUEUE_MAX_SIZE},
        "log": {"level": "warn"},
    }
    if system is not None and system.kind == "stream":
        names = stream_names(system.streams)
        client = redis.Redis.from_url(redis_server.url)
        try:
            for name in names:
                client.xgroup_create(name, CONSUMER_GROUP, id="0", mkstream=True)
        finally:
            client.close()
        extra["consumers"] = [
            {
                "name": "bench",
                "enabled": True,
                "type": "redis_stream",
                "redis_stream": {
                    "address": [f"redis://127.0.0.1:{redis_server.port}"],
                    "streams": names,
                    "consumer_group": CONSUMER_GROUP,
                    "num_workers": system.workers,
                },
            }
        ]
    if system is not None and system.kind == "postgresql":
        assert database is not None
        extra["consumers"] = [consumer_config(system, database.dsn)]
    return extra


class Stack:
    """A fresh Redis and a fresh Centrifugo (configured for ``system``), and a fresh
    PostgreSQL for a database system, running until ``close()``."""

    def __init__(self, system: System | None) -> None:
        with contextlib.ExitStack() as starting:
            self.database: Database | None = None
            if system is not None and system.database:
                self.database = starting.enter_context(Database(system))
            self.redis = starting.enter_context(RedisServer())
            extra = centrifugo_extra_config(system, self.redis, self.database)
            self.centrifugo = starting.enter_context(CentrifugoServer(extra_config=extra))
            self._services = starting.pop_all()
        # http.client, not httpx: the harness polls every few ms while the systems run,
        # and httpx's CPU per request would be taken from them.
        self.http = http.client.HTTPConnection("127.0.0.1", self.centrifugo.port, timeout=5.0)

    def pids(self) -> dict[str, int]:
        """The servers' pids by role, for CPU and RSS accounting."""
        assert self.redis.pid is not None and self.centrifugo.pid is not None
        pids = {"redis": self.redis.pid, "centrifugo": self.centrifugo.pid}
        if self.database is not None:
            pids["postgres"] = self.database.pid
        return pids

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each server; PostgreSQL's include its backends."""
        return {
            name: tree_cpu_seconds(pid) if name == "postgres" else cpu_seconds([pid])
            for name, pid in self.pids().items()
        }

    def accepted(self, channel: str) -> int:
        """How many publications Centrifugo accepted into ``channel`` (its top offset)."""
        body = json.dumps({"channel": channel, "limit": 0})
        headers = {"X-API-Key": DEV_API_KEY, "Content-Type": "application/json"}
        try:
            self.http.request("POST", "/api/history", body, headers)
            reply = json.loads(self.http.getresponse().read())
        except (OSError, http.client.HTTPException):
            self.http.close()  # reconnects on the next request
            return 0
        return int(reply.get("result", {}).get("offset", 0))

    def close(self) -> None:
        self.http.close()
        self._services.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
