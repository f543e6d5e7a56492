"""Prometheus metrics of one outbox forwarder (``centrifugo_async_outbox_*``).

Each forwarder owns its registry, so several can run in one test process. The
backlog gauges cover the lanes this forwarder owns; summing over forwarders
gives the whole table without double counting.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ForwarderMetrics"]

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class ForwarderMetrics:
    """Every metric the forwarder exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.forwarded = Counter(
            "centrifugo_async_outbox_forwarded",
            "Rows enqueued into the shard lists and deleted from the outbox.",
            registry=r,
        )
        self.rerouted = Counter(
            "centrifugo_async_outbox_rerouted",
            "Rows written with another shard count than Redis records, routed again.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "centrifugo_async_outbox_dead_lettered",
            "Rows whose envelope could not be read, moved to a dead-letter list.",
            registry=r,
        )
        # error_class: redis, postgres, topology
        self.retried = Counter(
            "centrifugo_async_outbox_retries",
            "Sweeps or connections tried again, by error class.",
            ["error_class"],
            registry=r,
        )
        self.batch_size = Histogram(
            "centrifugo_async_outbox_batch_size",
            "Rows per sweep.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_to_enqueue = Histogram(
            "centrifugo_async_outbox_wait_seconds",
            "From the writing transaction's start (created_at) to the row's enqueue in Redis.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge(
            "centrifugo_async_outbox_backlog",
            "Rows waiting in an owned lane.",
            ["lane"],
            registry=r,
        )
        self.oldest_age = Gauge(
            "centrifugo_async_outbox_oldest_age_seconds",
            "Age of the oldest row of an owned lane (0 when empty).",
            ["lane"],
            registry=r,
        )
        self.lanes_owned = Gauge(
            "centrifugo_async_outbox_lanes_owned",
            "Lanes whose advisory lock this forwarder holds.",
            registry=r,
        )

    def forget_lane(self, lane: int) -> None:
        """Stop exporting the gauges of a lane this forwarder no longer owns."""
        for gauge in (self.backlog, self.oldest_age):
            with contextlib.suppress(KeyError):
                gauge.remove(str(lane))
