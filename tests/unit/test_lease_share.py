"""``fair_share``: how many shards each relay of a group should own.

The live members, sorted by id, split the shards evenly: ``shards // n`` each,
plus one for each of the first ``shards % n`` members.
"""

from __future__ import annotations

import pytest

from centrifugo_async.relay.lease import fair_share


def shares(shards: int, members: list[str]) -> list[int]:
    return [fair_share(shards, members, me) for me in members]


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 16, 17, 100, 1024])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8])
def test_every_shard_is_owned_once_and_shares_differ_by_at_most_one(shards: int, size: int) -> None:
    members = [f"relay-{i:02d}" for i in range(size)]
    got = shares(shards, members)
    assert sum(got) == shards
    assert max(got) - min(got) <= 1
    assert got == sorted(got, reverse=True), "the extra shards go to the first members"
    base, extra = divmod(shards, size)
    assert got == [base + 1] * extra + [base] * (size - extra)


def test_a_lone_relay_owns_everything() -> None:
    assert fair_share(16, ["only"], "only") == 16


@pytest.mark.parametrize(("shards", "size"), [(16, 4), (12, 3), (6, 6), (10, 2)])
def test_an_even_split_is_a_tie(shards: int, size: int) -> None:
    assert set(shares(shards, [f"r{i}" for i in range(size)])) == {shards // size}


def test_more_relays_than_shards_leaves_the_last_ones_on_standby() -> None:
    assert shares(2, ["a", "b", "c", "d"]) == [1, 1, 0, 0]


def test_the_order_is_by_sorted_id_not_by_number() -> None:
    # "relay-10" sorts before "relay-9": it gets the extra shard
    members = sorted(["relay-9", "relay-10"])
    assert fair_share(3, members, "relay-10") == 2
    assert fair_share(3, members, "relay-9") == 1


def test_a_relay_missing_from_the_group_counts_itself_in() -> None:
    # before its first heartbeat is visible, a relay takes its own sorted place
    assert fair_share(4, ["b", "c"], "a") == 2
    assert fair_share(4, ["a", "b"], "c") == 1
    assert fair_share(4, ["a", "c"], "b") == 1
    assert fair_share(4, [], "a") == 4
