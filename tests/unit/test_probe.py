"""The shard probe: which commands it plans, and how it reads redis-py's replies.

The replies below have the shapes redis-py returns for these commands (checked
against a real Redis by the stats and health integration tests): ints for
``LLEN``/``PTTL``, bytes or None for ``LINDEX``/``GET``, a list for ``HMGET``.
"""

from __future__ import annotations

from typing import Any

import pytest

from centrifugo_async.protocol import Envelope, Keyspace, encode_envelope
from centrifugo_async.protocol.probe import (
    ShardDepth,
    ShardLease,
    ShardStatus,
    plan_depths,
    plan_status,
)

KEYSPACE = Keyspace(prefix="p", shards=3)
COUNTERS = ("seq", "delivered", "expired", "dead_lettered", "lease_since_ms", "superseded")


def envelope(ts: int) -> bytes:
    return encode_envelope(
        Envelope(v=1, channel="c", key="k", version=1, seq=1, shard=0, ts=ts, data={"a": 1})
    )


def test_depth_plan_reads_lists_and_heads_of_the_chosen_shards_in_order() -> None:
    probe = plan_depths(KEYSPACE, [2, 0])
    assert probe.commands == (
        ("LLEN", "{p:2}:queue"),
        ("LLEN", "{p:2}:inflight"),
        ("LINDEX", "{p:2}:inflight", 0),
        ("LINDEX", "{p:2}:queue", 0),
        ("LLEN", "{p:0}:queue"),
        ("LLEN", "{p:0}:inflight"),
        ("LINDEX", "{p:0}:inflight", 0),
        ("LINDEX", "{p:0}:queue", 0),
    )
    assert [keys.shard for keys in probe.shards] == [2, 0]


def test_status_plan_adds_dead_letters_counters_and_lease_for_every_shard() -> None:
    probe = plan_status(KEYSPACE)
    assert len(probe.commands) == 8 * KEYSPACE.shards
    assert probe.commands[4:8] == (
        ("LLEN", "{p:0}:dlq"),
        ("HMGET", "{p:0}:state", *COUNTERS),
        ("GET", "{p:0}:lease"),
        ("PTTL", "{p:0}:lease"),
    )
    assert probe.commands[8] == ("LLEN", "{p:1}:queue")


def test_depth_prefers_the_in_flight_head_over_the_queue_head() -> None:
    probe = plan_depths(KEYSPACE, [0, 1, 2])
    replies: list[Any] = [
        *(3, 2, envelope(1_000), envelope(2_000)),
        *(5, 0, None, envelope(2_000)),
        *(0, 0, None, None),
    ]
    assert probe.read(replies) == [
        ShardDepth(shard=0, queued=3, in_flight=2, oldest_ts=1_000),
        ShardDepth(shard=1, queued=5, in_flight=0, oldest_ts=2_000),
        ShardDepth(shard=2, queued=0, in_flight=0, oldest_ts=None),
    ]


def test_an_unreadable_head_has_no_age() -> None:
    [depth] = plan_depths(KEYSPACE, [1]).read([1, 0, None, b"not an envelope"])
    assert depth.oldest_ts is None
    assert depth.oldest_age_ms(5_000) is None


def test_oldest_age_is_never_negative() -> None:
    depth = ShardDepth(shard=0, queued=1, in_flight=0, oldest_ts=10_000)
    assert depth.oldest_age_ms(12_500) == 2_500
    assert depth.oldest_age_ms(9_000) == 0  # clocks of publisher and reader disagree


def test_decoded_responses_read_the_same() -> None:
    raw = plan_depths(KEYSPACE, [0]).read([3, 1, envelope(7), None])
    text = plan_depths(KEYSPACE, [0]).read([3, 1, envelope(7).decode(), None])
    assert raw == text


def status_replies(
    counters: list[Any], lease: bytes | None, ttl_ms: int, *, dlq: int = 0
) -> list[Any]:
    return [2, 1, envelope(1_000), None, dlq, counters, lease, ttl_ms]


def test_status_of_a_held_shard() -> None:
    probe = plan_status(Keyspace(prefix="p", shards=1))
    replies = status_replies([b"41", b"30", b"2", b"3", b"9000", b"6"], b"relay-a#7", 4_200, dlq=3)
    [status] = probe.read(replies)
    assert status == ShardStatus(
        depth=ShardDepth(shard=0, queued=2, in_flight=1, oldest_ts=1_000),
        dead_letters=3,
        seq=41,
        delivered=30,
        expired=2,
        dead_lettered=3,
        lease=ShardLease(owner="relay-a", epoch=7, since_ms=9_000, ttl_ms=4_200),
        superseded=6,
    )
    assert status.lease is not None
    assert status.lease.age_ms(10_500) == 1_500


def test_a_fresh_shard_counts_zero_and_has_no_lease() -> None:
    probe = plan_status(Keyspace(prefix="p", shards=1))
    [status] = probe.read(status_replies([None] * 6, None, -2))
    assert (status.seq, status.delivered, status.expired, status.dead_lettered) == (0, 0, 0, 0)
    assert status.superseded == 0
    assert status.lease is None


def test_a_free_shard_keeps_its_counters_but_shows_no_lease() -> None:
    probe = plan_status(Keyspace(prefix="p", shards=1))
    [status] = probe.read(status_replies([b"5", b"5", b"0", b"0", b"9000", None], None, -2))
    assert status.delivered == 5
    assert status.lease is None  # lease_since_ms of the last holder is not shown


@pytest.mark.parametrize(
    ("value", "since", "ttl_ms", "expected"),
    [
        (b"relay-a#7", b"100", 900, ShardLease("relay-a", 7, 100, 900)),
        (b"host#1#12", b"100", 900, ShardLease("host#1", 12, 100, 900)),  # '#' in the id
        (b"relay-a#7", None, 900, ShardLease("relay-a", 7, None, 900)),  # no since: no age
        (b"relay-a#7", b"0", 900, ShardLease("relay-a", 7, None, 900)),
        (b"relay-a#7", b"100", -1, ShardLease("relay-a", 7, 100, None)),  # no expiry set
        (b"relay-a#7", b"100", -2, ShardLease("relay-a", 7, 100, None)),  # expired meanwhile
        (b"relay-a#x", b"100", 900, ShardLease("relay-a", None, 100, 900)),
        (b"#3", b"100", 900, ShardLease(None, 3, 100, 900)),
    ],
)
def test_lease_values(value: bytes, since: bytes | None, ttl_ms: int, expected: ShardLease) -> None:
    probe = plan_status(Keyspace(prefix="p", shards=1))
    [status] = probe.read(status_replies([b"1", b"1", b"0", b"0", since, None], value, ttl_ms))
    assert status.lease == expected
    assert status.lease is not None
    assert (status.lease.age_ms(1_000) is None) == (expected.since_ms is None)


def test_lease_age_counts_from_the_acquisition() -> None:
    assert ShardLease("a", 1, 4_000, 900).age_ms(5_000) == 1_000
    assert ShardLease("a", 1, None, 900).age_ms(5_000) is None


def test_replies_must_match_the_plan() -> None:
    probe = plan_depths(KEYSPACE, [0, 1])
    with pytest.raises(ValueError, match="expected 8 replies, got 4"):
        probe.read([0, 0, None, None])


def test_no_shards_no_commands() -> None:
    probe = plan_depths(KEYSPACE, [])
    assert probe.commands == ()
    assert probe.read([]) == []
