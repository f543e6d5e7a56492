"""Prometheus metrics of one relay process (``centrifugo_async_*``).

Each relay owns its registry, so several relays can run in one test process.
Per-shard gauges are exported only for the shards this relay owns; summing over
the relays of a group gives the whole picture without double counting.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["RelayMetrics"]

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000)


class RelayMetrics:
    """Every metric the relay exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "centrifugo_async_messages_published",
            "Messages accepted by Centrifugo.",
            ["shard"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "centrifugo_async_messages_dead_lettered",
            "Messages moved to a dead-letter list, by reason.",
            ["reason"],
            registry=r,
        )
        self.expired = Counter(
            "centrifugo_async_messages_expired",
            "Messages dropped because they were older than their ttl or channel policy.",
            ["shard"],
            registry=r,
        )
        self.superseded = Counter(
            "centrifugo_async_messages_superseded",
            "Messages not sent because a newer version of their key was delivered or in hand "
            "(monotonic and latest delivery).",
            ["shard"],
            registry=r,
        )
        # error_class: a RetryCause value (timeout, http_5xx, http_429, http_other,
        # code_100, bad_reply, network).
        self.retried = Counter(
            "centrifugo_async_retries",
            "Batches (or commands) sent again, by error class.",
            ["error_class"],
            registry=r,
        )
        self.batch_size = Histogram(
            "centrifugo_async_batch_size",
            "Commands per /api/batch request.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.enqueue_to_accept = Histogram(
            "centrifugo_async_enqueue_to_accept_seconds",
            "From enqueue (envelope ts) to Centrifugo accepting the message.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "centrifugo_async_centrifugo_request_seconds",
            "Duration of /api/batch requests.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "centrifugo_async_queue_depth", "Messages waiting in the shard queue.", ["shard"],
            registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "centrifugo_async_in_flight", "Messages claimed and not yet accepted.", ["shard"],
            registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "centrifugo_async_lag_seconds",
            "Age of the oldest waiting message of the shard (0 when empty).",
            ["shard"],
            registry=r,
        )
        self.node_requests = Counter(
            "centrifugo_async_node_requests",
            "Requests to each Centrifugo node (--api-url), by outcome: ok, or failed "
            "(network error, timeout or HTTP 5xx: the shard moves to the next node).",
            ["node", "outcome"],
            registry=r,
        )
        self.lease_owned = Gauge(
            "centrifugo_async_lease_owned",
            "1 for each shard whose lease this relay holds.",
            ["shard"],
            registry=r,
        )

    def forget_shard(self, shard: int) -> None:
        """Stop exporting per-shard gauges of a shard this relay no longer owns."""
        label = str(shard)
        for gauge in (self.queue_depth, self.in_flight, self.lag):
            with contextlib.suppress(KeyError):
                gauge.remove(label)
        self.lease_owned.labels(label).set(0)
