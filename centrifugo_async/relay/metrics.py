"""Prometheus metrics of one relay process (``centrifugo_async_*``).

Each relay owns its registry, so several relays can run in one test process.
Per-shard gauges are exported only for the shards this relay owns; summing over
the relays of a group gives the whole picture without double counting.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BatchHistogram", "RelayMetrics"]

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000)


class BatchHistogram(Collector):
    """A histogram observed a batch at a time, for what the relay measures per message.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets
    for every value: per message, that was 12% of the relay's CPU at full batches
    in an earlier profile. Here one bisection per value into plain integers; the
    exported series (``_bucket``, ``_count``, ``_sum``) are the same. Written by
    the event loop only; a scrape from another thread copies the counts first,
    so ``_count`` always equals the ``+Inf`` bucket.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)
        """Per bucket (not cumulative); the last one is past the largest bound."""
        self._sum = 0.0
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Count each of ``values`` in the first bucket whose bound is at least it."""
        counts, bounds, where = self._counts, self._bounds, bisect.bisect_left
        total = 0.0
        for value in values:
            counts[where(bounds, value)] += 1
            total += value
        self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts = list(self._counts)
        cumulative, running = [], 0
        for bound, count in zip((*self._bounds, math.inf), counts, strict=True):
            running += count
            cumulative.append((_bound_label(bound), running))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self._sum
        )


def _bound_label(bound: float) -> str:
    """A bucket's ``le`` as prometheus_client writes it (``0.001``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == math.inf else repr(float(bound))


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
        self.enqueue_to_accept = BatchHistogram(
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
