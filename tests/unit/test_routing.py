"""Cross-language routing: the shared vectors and the properties routing relies on."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from centrifugo_async import Keyspace, shard_for
from centrifugo_async.protocol.routing import fnv1a_32

CASES = json.loads((Path(__file__).parents[1] / "vectors" / "routing.json").read_text("utf-8"))


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["key"][:20])
def test_routing_vectors(case: dict[str, Any]) -> None:
    assert case["key"].encode().hex() == case["utf8_hex"]
    assert fnv1a_32(case["key"].encode()) == case["fnv1a_32"]
    for shards, expected in case["shards"].items():
        assert shard_for(case["key"], int(shards)) == expected


def test_known_fnv1a_values() -> None:
    # Published FNV-1a 32-bit reference values.
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


def test_keys_spread_over_shards() -> None:
    counts = Counter(shard_for(f"user:{i}", 16) for i in range(16_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1.2 * min(counts.values())


def test_all_keys_of_a_shard_share_one_cluster_hash_tag() -> None:
    keys = Keyspace(prefix="app.events", shards=4).shard(3)
    names = [keys.queue, keys.inflight, keys.state, keys.lease, keys.bell, keys.dlq]
    assert {name.split("}")[0] + "}" for name in names} == {"{app.events:3}"}


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b", " padded"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid prefix"):
        Keyspace(prefix=prefix)


@pytest.mark.parametrize("shards", [0, -1, 4097, True])
def test_bad_shard_counts_are_refused(shards: int) -> None:
    with pytest.raises(ValueError, match="invalid shard count"):
        Keyspace(shards=shards)
