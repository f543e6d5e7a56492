"""Checks over what subscribers received."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any


def versions_by_key(received: Iterable[dict[str, Any]]) -> dict[str, list[int]]:
    """Arrival order of versions, per key."""
    result: dict[str, list[int]] = defaultdict(list)
    for envelope in received:
        result[envelope["key"]].append(envelope["version"])
    return result


def order_inversions(received: Iterable[dict[str, Any]]) -> int:
    """How many times a key's version arrived lower than one already seen."""
    inversions = 0
    for versions in versions_by_key(received).values():
        highest = -1
        for version in versions:
            if version < highest:
                inversions += 1
            highest = max(highest, version)
    return inversions


def published_pairs(received: Iterable[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(e["key"], e["version"]) for e in received}


def seq_inversions(received: Iterable[dict[str, Any]]) -> int:
    """How many envelopes arrived after a higher ``seq`` of their shard on their channel.

    A shard's messages are sent in ``seq`` order and Centrifugo keeps each
    channel's order, so on one channel a shard's seqs only grow. A repeat of a
    seq already seen is a duplicate, not counted here.
    """
    highest: dict[tuple[str, int], int] = defaultdict(int)
    seen: set[tuple[int, int]] = set()
    inversions = 0
    for envelope in received:
        lane = (envelope["channel"], envelope["shard"])
        position = (envelope["shard"], envelope["seq"])
        if envelope["seq"] < highest[lane] and position not in seen:
            inversions += 1
        highest[lane] = max(highest[lane], envelope["seq"])
        seen.add(position)
    return inversions


def seq_gaps(received: Iterable[dict[str, Any]], last_seq: Mapping[int, int]) -> dict[int, int]:
    """Per shard, how many of the seqs ``1..last_seq[shard]`` never arrived (lost messages)."""
    arrived: dict[int, set[int]] = defaultdict(set)
    for envelope in received:
        arrived[envelope["shard"]].add(envelope["seq"])
    gaps = {
        shard: last - len(arrived[shard] & set(range(1, last + 1)))
        for shard, last in last_seq.items()
    }
    return {shard: missing for shard, missing in gaps.items() if missing}
