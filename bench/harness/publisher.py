"""The publisher alone, in this process: ``publish()`` round trips and ``publish_many()`` rate."""

from __future__ import annotations

import time
from typing import Any

import redis

from devstack import RedisServer

from .settings import Settings

__all__ = ["run_publisher"]

MANY_BATCH = 10_000


class _CountingConnection(redis.Connection):
    """Counts writes to the socket: one per command, or one per pipeline execution,
    each followed by reading the replies, so one write is one round trip."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def run_publisher(settings: Settings) -> dict[str, Any]:
    """publish() round trips/s and publish_many() envelopes/s, from this process."""
    from centrifugo_async import Message, Publisher

    w = settings.workload
    pad = w.pad
    with RedisServer() as server:
        pool = redis.ConnectionPool.from_url(server.url, connection_class=_CountingConnection)
        with Publisher(redis.Redis(connection_pool=pool), shards=16) as publisher:
            publisher.publish("obj:warmup", {}, key="k", version=0)
            messages = list(w.key_versions(settings.publish_calls))
            writes_before = _CountingConnection.writes
            started = time.perf_counter()
            for key, version in messages:
                publisher.publish("obj:publish", {"t": 0, "pad": pad}, key=key, version=version)
            elapsed = time.perf_counter() - started
            round_trips = _CountingConnection.writes - writes_before
            publish_per_s = len(messages) / elapsed
            batch = [
                Message("obj:many", {"t": 0, "pad": pad}, key, version)
                for key, version in w.key_versions(settings.publish_many_envelopes)
            ]
            started = time.perf_counter()
            for start in range(0, len(batch), MANY_BATCH):
                publisher.publish_many(batch[start : start + MANY_BATCH])
            many_per_s = len(batch) / (time.perf_counter() - started)
        pool.disconnect()
    return {
        "publish_per_s": round(publish_per_s),
        "round_trips_per_publish": round(round_trips / len(messages), 3),
        "publish_many_envelopes_per_s": round(many_per_s),
        "publish_many_batch": MANY_BATCH,
    }
