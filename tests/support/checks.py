"""Checks over what subscribers received."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
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
