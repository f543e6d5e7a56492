"""``EnqueueRun``: what a batch's pipeline replies mean, decided without I/O.

The real-Redis cases (a refused shard, memory full half-way) are in
tests/integration/test_partial_publish.py; here are the combinations a test
cannot provoke on demand: a script cache missing on some cluster nodes only,
and a connection lost after part of a batch went in.
"""

from __future__ import annotations

import pytest
import redis.exceptions

from centrifugo_async import (
    Keyspace,
    Message,
    PartialPublish,
    QueueUnavailable,
    TopologyMismatch,
    shard_for,
)
from centrifugo_async.publisher._plan import EnqueueRun, plan

KEYSPACE = Keyspace(shards=4)


def keys_by_shard() -> list[str]:
    """One key per shard, in shard order."""
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(shard_for(f"k{i}", 4), f"k{i}")
    return [found[shard] for shard in range(4)]


MESSAGES = [Message("c", {"n": n}, key, n) for n, key in enumerate(keys_by_shard() * 2)]


def new_run() -> EnqueueRun:
    return EnqueueRun(plan(MESSAGES, KEYSPACE, 10_000))


def noscript() -> redis.exceptions.NoScriptError:
    return redis.exceptions.NoScriptError("NOSCRIPT No matching script")


def test_all_answered_gives_every_envelope_with_its_seq() -> None:
    run = new_run()
    assert len(run.commands()) == 4
    assert run.record([1, 10, 100, 1000]) is False
    envelopes = run.result()
    assert [(e.shard, e.seq) for e in envelopes] == [
        (0, 1),
        (0, 2),
        (1, 10),
        (1, 11),
        (2, 100),
        (2, 101),
        (3, 1000),
        (3, 1001),
    ]


def test_only_the_calls_that_missed_the_script_are_sent_again() -> None:
    """A cluster node without the script must not make the others enqueue twice."""
    run = new_run()
    first = run.commands()
    assert run.record([1, noscript(), 5, noscript()]) is True
    assert run.commands() == [first[1], first[3]]
    assert run.record([7, 9]) is False
    assert [e.seq for e in run.result()] == [1, 2, 7, 8, 5, 6, 9, 10]


def test_a_script_missing_twice_is_reported_for_those_calls_only() -> None:
    run = new_run()
    run.record([1, noscript(), 5, 3])
    assert run.record([noscript()]) is False
    with pytest.raises(PartialPublish, match="forgetting the enqueue script") as caught:
        run.result()
    assert caught.value.not_enqueued == [MESSAGES[1], MESSAGES[5]]
    assert len(caught.value.enqueued) == 6


def test_refused_calls_are_reported_in_the_order_of_the_batch() -> None:
    run = new_run()
    oom = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'")
    run.record([1, oom, 5, redis.exceptions.ResponseError("TOPOLOGY shards=8")])
    with pytest.raises(PartialPublish, match=r"enqueued 4 of 8 messages \(4 refused\)") as caught:
        run.result()
    partial = caught.value
    assert partial.not_enqueued == [MESSAGES[1], MESSAGES[3], MESSAGES[5], MESSAGES[7]]
    assert [e.key for e in partial.enqueued] == [MESSAGES[i].key for i in (0, 4, 2, 6)]
    assert partial.unknown == []
    assert isinstance(partial.__cause__, QueueUnavailable)


def test_a_connection_lost_after_part_went_in_leaves_the_rest_unknown() -> None:
    run = new_run()
    assert run.record([1, noscript(), 5, noscript()]) is True
    run.connection_lost(redis.exceptions.ConnectionError("Connection reset by peer"))
    with pytest.raises(
        PartialPublish, match=r"4 of 8 messages \(4 with an unknown outcome\)"
    ) as caught:
        run.result()
    assert caught.value.unknown == [MESSAGES[1], MESSAGES[3], MESSAGES[5], MESSAGES[7]]
    assert caught.value.not_enqueued == []


def test_nothing_enqueued_raises_the_first_typed_error() -> None:
    run = new_run()
    topology = redis.exceptions.ResponseError("TOPOLOGY shard state records shards=8")
    run.record([topology, topology, topology, topology])
    with pytest.raises(TopologyMismatch):
        run.result()
    lost = new_run()
    lost.connection_lost(redis.exceptions.TimeoutError("Timeout reading from socket"))
    with pytest.raises(QueueUnavailable, match="Timeout") as caught:
        lost.result()
    assert not isinstance(caught.value, PartialPublish)
