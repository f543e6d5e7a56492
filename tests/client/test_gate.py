"""VersionGate: every decision reason, seeding, the LRU bound and evicted keys."""

from __future__ import annotations

import attrs
import pytest

from centrifugo_async import Envelope
from centrifugo_async.client import Decision, GateStats, VersionGate
from centrifugo_async.client.gate import _EvictedKeys


def envelope(key: str, version: int) -> Envelope[dict[str, int]]:
    return Envelope(v=1, channel="obj:t", key=key, version=version, seq=1, shard=0, ts=1, data={})


def test_every_reason_of_a_known_and_an_unknown_key() -> None:
    gate = VersionGate()
    assert gate.check("a", 5) == Decision(True, "new")
    assert gate.check("a", 6) == Decision(True, "newer")
    assert gate.check("a", 6) == Decision(False, "duplicate")
    assert gate.check("a", 4) == Decision(False, "stale")
    assert gate.version("a") == 6
    assert gate.version("missing") is None


def test_version_zero_is_a_real_version() -> None:
    gate = VersionGate()
    assert gate.check("a", 0).reason == "new"
    assert gate.check("a", 0).reason == "duplicate"
    assert gate.check("a", 1).reason == "newer"


def test_accept_reads_key_and_version_of_the_envelope() -> None:
    gate = VersionGate()
    assert gate.accept(envelope("k", 2)) == Decision(True, "new")
    assert gate.accept(envelope("k", 1)) == Decision(False, "stale")
    assert gate.accept(envelope("other", 1)) == Decision(True, "new")


def test_seed_keeps_the_larger_version() -> None:
    gate = VersionGate()
    gate.seed("a", 5)
    gate.seed("a", 3)
    assert gate.version("a") == 5
    gate.seed("a", 7)
    assert gate.version("a") == 7
    assert gate.check("a", 7).reason == "duplicate"
    assert gate.check("a", 8).reason == "newer"


def test_seed_is_not_counted_as_a_decision() -> None:
    gate = VersionGate()
    gate.seed("a", 1)
    gate.seed("b", 1)
    assert gate.stats() == GateStats(size=2, accepted=0, stale=0, duplicate=0, evicted=0)


def test_decisions_are_frozen() -> None:
    decision = VersionGate().check("a", 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        decision.accepted = False  # type: ignore[misc]


def test_size_never_exceeds_max_keys() -> None:
    gate = VersionGate(max_keys=10)
    for n in range(100):
        gate.check(f"k{n}", 1)
        assert len(gate) <= 10
    assert gate.stats().size == 10
    # The ten most recent keys are the ones kept.
    assert [gate.version(f"k{n}") for n in range(90, 100)] == [1] * 10
    assert gate.version("k89") is None


def test_the_least_recently_used_key_is_evicted() -> None:
    gate = VersionGate(max_keys=2)
    gate.seed("a", 1)
    gate.seed("b", 1)
    gate.seed("a", 1)  # seeding marks "a" most recently used
    gate.seed("c", 1)  # evicts "b"
    assert (gate.version("a"), gate.version("b"), gate.version("c")) == (1, None, 1)
    gate.check("a", 1)  # a dropped duplicate is not a use of "a"
    gate.check("d", 1)  # evicts "a"
    assert (gate.version("a"), gate.version("c"), gate.version("d")) == (None, 1, 1)
    gate.check("c", 2)  # an accepted update is
    gate.check("e", 1)  # evicts "d"
    assert (gate.version("c"), gate.version("d"), gate.version("e")) == (2, None, 1)


def test_an_evicted_key_is_dropped_until_the_app_seeds_it() -> None:
    gate = VersionGate(max_keys=2)
    gate.check("a", 3)
    gate.check("b", 1)
    gate.check("c", 1)  # evicts "a"
    # Without the filter version 2 would pass as "new" although the app holds 3.
    assert gate.check("a", 2) == Decision(False, "evicted")
    assert gate.check("a", 4) == Decision(False, "evicted")
    assert gate.version("a") is None
    gate.seed("a", 4)  # the app reloaded the object
    assert gate.check("a", 4).reason == "duplicate"
    assert gate.check("a", 5).reason == "newer"
    assert gate.stats().evicted == 2


def test_the_filter_has_no_false_negatives_and_few_false_positives() -> None:
    gate = VersionGate(max_keys=100, evicted_filter_bits=1 << 16)
    for n in range(1100):
        gate.check(f"user:{n}", 1)
    evicted = [f"user:{n}" for n in range(1000)]
    assert all(gate.check(key, 2).reason == "evicted" for key in evicted)
    # Each fresh key accepted evicts another, so the filter holds 1000 to 3000 keys
    # meanwhile: at most about 0.2 % false positives.
    fresh = [gate.check(f"fresh:{n}", 1).reason for n in range(2000)]
    assert fresh.count("evicted") <= 5
    assert fresh.count("new") == 2000 - fresh.count("evicted")


@pytest.mark.parametrize(
    ("key", "bits", "positions"),
    [
        ("user:1", 65536, [19147, 47078, 9473]),
        ("a", 65536, [10540, 3385, 61766]),
        ("Ünïcödé-ключ", 65536, [32313, 34330, 36347]),
        ("user:1", 1000, [627, 350, 73]),
        ("emoji:🚀", 7, [5, 4, 3]),
    ],
)
def test_bloom_positions_match_the_javascript_twin(
    key: str, bits: int, positions: list[int]
) -> None:
    """The same values as js-client's ``bloomPositions`` test."""
    assert _EvictedKeys(bits).positions(key) == positions


def test_a_tiny_filter_errs_on_the_side_of_reloading() -> None:
    gate = VersionGate(max_keys=1, evicted_filter_bits=8)
    for n in range(50):
        gate.check(f"k{n}", 1)
    # A saturated filter reports every unknown key as evicted (false positives
    # included): never "new" for a key that was really forgotten.
    forgotten = [f"k{n}" for n in range(50) if gate.version(f"k{n}") is None]
    assert len(forgotten) == 49
    assert {gate.check(key, 0).reason for key in forgotten} == {"evicted"}
    assert gate.check("never-seen", 0).reason == "evicted"


def test_reset_forgets_keys_and_filter_but_keeps_counters() -> None:
    gate = VersionGate(max_keys=1)
    gate.check("a", 1)
    gate.check("b", 1)  # evicts "a"
    assert gate.check("a", 1).reason == "evicted"
    gate.reset()
    assert len(gate) == 0
    assert gate.version("b") is None
    assert gate.check("a", 1).reason == "new"
    assert gate.stats() == GateStats(size=1, accepted=3, stale=0, duplicate=0, evicted=1)


def test_stats_count_each_reason() -> None:
    gate = VersionGate(max_keys=3)
    gate.check("a", 1)  # new
    gate.check("a", 2)  # newer
    gate.check("a", 2)  # duplicate
    gate.check("a", 1)  # stale
    gate.check("a", 0)  # stale
    for key in "bcd":  # "d" evicts "a"
        gate.check(key, 1)
    gate.check("a", 3)  # evicted
    assert gate.stats() == GateStats(size=3, accepted=5, stale=2, duplicate=1, evicted=1)


@pytest.mark.parametrize("bad", [-1, 2**53, True, 1.0, "1"])
def test_invalid_versions_are_refused(bad: object) -> None:
    gate = VersionGate()
    with pytest.raises((TypeError, ValueError)):
        gate.check("a", bad)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        gate.seed("a", bad)  # type: ignore[arg-type]
    assert len(gate) == 0


@pytest.mark.parametrize("kwargs", [{"max_keys": 0}, {"evicted_filter_bits": 0}])
def test_invalid_sizes_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        VersionGate(**kwargs)


def test_a_delete_leaves_a_tombstone_that_drops_older_updates() -> None:
    gate = VersionGate()
    gate.seed("a", 3)
    assert gate.check("a", 4, deleted=True) == Decision(True, "newer")
    assert (gate.version("a"), gate.is_deleted("a")) == (4, True)
    assert gate.check("a", 3) == Decision(False, "stale")  # the late update of a deleted object
    assert gate.check("a", 4) == Decision(False, "duplicate")
    assert gate.check("a", 4, deleted=True) == Decision(False, "duplicate")
    assert gate.check("a", 5) == Decision(True, "newer")  # re-created at a newer version
    assert not gate.is_deleted("a")


def test_a_delete_of_an_unknown_key_is_recorded_and_an_evicted_one_is_not() -> None:
    gate = VersionGate(max_keys=1)
    assert gate.accept(envelope("a", 2)) == Decision(True, "new")
    deleted = Envelope(
        v=1, channel="obj:t", key="b", version=7, seq=2, shard=0, ts=1, data=None, deleted=True
    )
    assert gate.accept(deleted) == Decision(True, "new")  # evicts "a"
    assert gate.is_deleted("b") and gate.check("b", 6).reason == "stale"
    assert gate.check("a", 3, deleted=True) == Decision(False, "evicted")


def test_tombstones_count_against_max_keys() -> None:
    gate = VersionGate(max_keys=2)
    gate.check("a", 1, deleted=True)
    gate.check("b", 1, deleted=True)
    gate.check("c", 1)  # evicts the tombstone of "a"
    assert len(gate) == 2 and gate.version("a") is None
    assert gate.check("a", 0).reason == "evicted"  # never "new": it may be the deleted one


def test_seed_reports_whether_it_advanced() -> None:
    gate = VersionGate(max_keys=1)
    assert gate.seed("a", 5) is True
    assert gate.seed("a", 5) is False
    assert gate.seed("a", 4) is False  # an older reload must not be applied
    assert gate.seed("a", 6, deleted=True) is True and gate.is_deleted("a")
    assert gate.seed("a", 6) is False and gate.is_deleted("a")
    gate.seed("b", 1)  # evicts "a"
    assert gate.seed("a", 2) is True  # unknown again: whatever was loaded is taken


def test_forget_drops_later_updates_as_evicted() -> None:
    gate = VersionGate()
    gate.seed("a", 3)
    gate.forget("a")
    assert gate.version("a") is None
    assert gate.check("a", 9).reason == "evicted"
    gate.forget("never-seen")
    assert gate.check("never-seen", 1).reason == "evicted"


def test_replace_sets_the_snapshot_and_turns_missing_keys_into_tombstones() -> None:
    gate = VersionGate(max_keys=10, evicted_filter_bits=64)
    gate.check("kept", 5)
    gate.check("gone", 3)
    gate.check("was-deleted", 4, deleted=True)
    gate.check("ahead", 9)
    for n in range(20):  # fills the filter
        gate.check(f"x{n}", 1)
    gate.replace(
        [
            ("kept", 6, False),
            ("ahead", 7, False),
            ("tomb", 2, True),
            ("dup", 1, False),
            ("dup", 3, False),
        ]
    )
    assert gate.version("kept") == 6 and not gate.is_deleted("kept")
    assert gate.version("ahead") == 7, "the snapshot's version is set, not maxed"
    assert gate.version("dup") == 3
    assert gate.is_deleted("tomb") and gate.check("tomb", 1).reason == "stale"
    assert gate.check("x19", 0).reason == "stale", "known keys missing from it became tombstones"
    assert gate.check("x19", 2).reason == "newer"
    assert gate.check("kept", 1).reason == "stale", "evicted before, known again"
    assert len(gate) <= 10


def test_replace_keeps_a_tombstone_for_a_key_deleted_before_the_reload() -> None:
    gate = VersionGate(max_keys=1)
    gate.check("a", 1)
    gate.check("a", 2, deleted=True)
    gate.replace([])
    assert gate.is_deleted("a") and gate.version("a") == 2
    assert gate.check("a", 1).reason == "stale"
    gate.check("b", 1)  # evicts the tombstone of "a"
    gate.replace([("b", 1, False)])
    assert gate.check("a", 1).reason == "evicted", "the filter is kept: never new"
