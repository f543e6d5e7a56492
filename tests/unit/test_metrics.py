"""``BatchHistogram`` exports what ``prometheus_client.Histogram`` would for the same values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from centrifugo_async.relay.metrics import BatchHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 1, 5, 900)
VALUES = [0.0, 0.001, 0.0011, 0.0025, 0.005, 0.3, 1.0, 5.0, 900.0, 901.0, 2.0]


def exported(registry: CollectorRegistry) -> tuple[list[str], float]:
    """The lines but the sum (without prometheus_client's ``_created`` series), and the sum."""
    lines = generate_latest(registry).decode().splitlines()
    total = next(float(line.split()[1]) for line in lines if line.startswith("wait_seconds_sum"))
    kept = [line for line in lines if "_created" not in line and "_sum" not in line]
    return kept, total


def test_a_batch_histogram_exports_the_same_buckets_count_and_sum() -> None:
    reference, batched = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("wait_seconds", "Waits.", buckets=BUCKETS, registry=reference)
    for value in VALUES:
        plain.observe(value)
    histogram = BatchHistogram("wait_seconds", "Waits.", buckets=BUCKETS, registry=batched)
    histogram.observe_many(VALUES[:4])
    histogram.observe_many([])
    histogram.observe_many(VALUES[4:])
    lines, total = exported(batched)
    expected_lines, expected_total = exported(reference)
    assert lines == expected_lines
    assert total == pytest.approx(expected_total)
