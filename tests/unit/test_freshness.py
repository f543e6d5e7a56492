"""The freshness decisions (``relay/freshness.py``): which versions the relay does not send.

Pure functions of what was claimed, what the shard remembers and what lies ahead
in the queue; the relay around them is tested in tests/integration/test_freshness.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from centrifugo_async import Envelope, encode_envelope
from centrifugo_async.exceptions import InvalidSetting
from centrifugo_async.relay.config import load_settings
from centrifugo_async.relay.freshness import (
    Candidate,
    Freshness,
    decode_key_version,
    latest_only,
    newest,
    outdated,
    supersede,
    version_field,
)
from centrifugo_async.relay.settings import FreshnessRule, RelaySettings


def monotonic(key: str, version: int) -> Candidate:
    return Candidate(version_field("obj:c", key), version, latest=False)


def latest(key: str, version: int) -> Candidate:
    return Candidate(version_field("obj:c", key), version, latest=True)


def known(**versions: int) -> dict[str, int]:
    return {version_field("obj:c", key): version for key, version in versions.items()}


def sent(candidates: list[Candidate | None], remembered: dict[str, int], **ahead: int) -> list[str]:
    """The candidates that are sent, as ``key@version`` (None as ``-``)."""
    flags = supersede(candidates, remembered, known(**ahead))
    return [
        "-" if c is None else f"{c.field.split('obj:c')[1]}@{c.version}"
        for c, stale in zip(candidates, flags, strict=True)
        if not stale
    ]


def test_the_field_names_one_channel_and_key_pair_unambiguously() -> None:
    assert version_field("ab", "c") != version_field("a", "bc")
    assert version_field("a:1", "x") != version_field("a", ":1x")
    assert version_field("ch", "k") == version_field("ch", "k") == "2:chk"
    assert version_field("ß", "é") == "1:ßé"


def test_monotonic_drops_what_is_not_newer_than_the_last_delivered_version() -> None:
    batch: list[Candidate | None] = [monotonic("k", 4), monotonic("k", 5), monotonic("k", 6)]
    assert sent(batch, known(k=5)) == ["k@6"]
    assert sent(batch, {}) == ["k@4", "k@5", "k@6"]


def test_monotonic_drops_an_older_or_equal_version_behind_a_newer_one_in_the_batch() -> None:
    batch: list[Candidate | None] = [
        monotonic("k", 7),
        monotonic("j", 1),
        monotonic("k", 6),
        monotonic("k", 7),
        monotonic("k", 8),
    ]
    assert sent(batch, {}) == ["k@7", "j@1", "k@8"]


def test_monotonic_sends_every_newer_version_in_order() -> None:
    batch: list[Candidate | None] = [monotonic("k", v) for v in (1, 2, 3)] + [monotonic("j", 9)]
    assert sent(batch, known(j=3)) == ["k@1", "k@2", "k@3", "j@9"]


def test_an_envelope_freshness_does_not_apply_to_is_always_sent() -> None:
    batch: list[Candidate | None] = [None, monotonic("k", 1), None]
    assert supersede(batch, known(k=5)) == [False, True, False]


def test_latest_sends_only_the_newest_version_in_hand() -> None:
    batch: list[Candidate | None] = [
        latest("k", 6),
        latest("j", 1),
        latest("k", 8),
        latest("k", 7),
        latest("j", 2),
    ]
    assert sent(batch, {}) == ["k@8", "j@2"]
    assert sent(batch, known(k=8)) == ["j@2"]


def test_latest_looks_ahead_into_the_queue() -> None:
    batch: list[Candidate | None] = [latest("k", 6), latest("j", 1)]
    assert sent(batch, {}, k=9) == ["j@1"], "k@9 is queued behind: k@6 is superseded"
    assert sent(batch, {}, k=6) == ["k@6", "j@1"], "the same version ahead supersedes nothing"
    assert sent(batch, {}, k=2) == ["k@6", "j@1"]


def test_ahead_concerns_only_latest_candidates() -> None:
    batch: list[Candidate | None] = [monotonic("k", 6)]
    assert sent(batch, {}, k=9) == ["k@6"]


def test_a_delete_is_a_version_like_any_other() -> None:
    # A delete at version 5 (an envelope with deleted: true) supersedes updates up to 5.
    batch: list[Candidate | None] = [monotonic("k", 4), monotonic("k", 5), monotonic("k", 6)]
    assert sent(batch, known(k=5)) == ["k@6"]


def test_a_retry_after_code_100_keeps_only_what_is_still_newest() -> None:
    pending = [monotonic("k", 3), monotonic("j", 1), monotonic("k", 9), None]
    kept, dropped = outdated(pending, known(k=5, j=0), lambda c: c)
    assert kept == [monotonic("j", 1), monotonic("k", 9), None]
    assert dropped == [monotonic("k", 3)]
    kept, dropped = outdated(pending, known(k=3), lambda c: c)
    assert dropped == [monotonic("k", 3)], "the same version was delivered"
    assert outdated(pending, {}, lambda c: c) == (pending, [])


def test_a_batch_resent_after_an_uncertain_answer_keeps_the_newest_of_each_key() -> None:
    pending = [monotonic("k", 3), None, monotonic("j", 1), monotonic("k", 5), monotonic("k", 4)]
    kept, dropped = latest_only(pending, lambda c: c)
    assert kept == [None, monotonic("j", 1), monotonic("k", 5)]
    assert dropped == [monotonic("k", 3), monotonic("k", 4)]


def test_newest_keeps_the_highest_version_per_field() -> None:
    assert newest([("a", 1), ("b", 5), ("a", 3), ("a", 2)]) == {"a": 3, "b": 5}
    assert newest([]) == {}


def test_a_queued_entry_is_read_for_its_channel_key_version_and_ttl() -> None:
    envelope = Envelope(1, "obj:c", "k", 7, 3, 0, 1_000, {"big": "x" * 100}, ttl_ms=2000)
    entry = decode_key_version(encode_envelope(envelope))
    assert entry is not None
    assert (entry.channel, entry.key, entry.version, entry.ttl_ms) == ("obj:c", "k", 7, 2000)
    assert decode_key_version(b"not an envelope") is None
    assert decode_key_version(b'{"channel": "c"}') is None


def test_channels_are_monotonic_unless_a_pattern_says_otherwise() -> None:
    settings = RelaySettings(
        api_key="k",
        freshness=(
            FreshnessRule("cursor:*", Freshness.LATEST),
            FreshnessRule("log:*", Freshness.ALL),
            FreshnessRule("*", Freshness.ALL),
        ),
    )
    assert settings.freshness_of("cursor:1") is Freshness.LATEST
    assert settings.freshness_of("log:x") is Freshness.ALL
    assert settings.freshness_of("obj:1") is Freshness.ALL
    assert RelaySettings(api_key="k").freshness_of("obj:1") is Freshness.MONOTONIC


def test_freshness_from_toml_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[freshness]\n"cursor:*" = "latest"\n"log:*" = "all"\n')
    settings, origin = load_settings(path, environ={"CENTRIFUGO_API_KEY": "k"})
    assert settings.freshness == (
        FreshnessRule("cursor:*", Freshness.LATEST),
        FreshnessRule("log:*", Freshness.ALL),
    )
    assert origin["freshness"] == f"freshness in {path}"
    environ = {"CENTRIFUGO_API_KEY": "k", "CENTRIFUGO_ASYNC_FRESHNESS": "a:*=monotonic, *=all"}
    settings, _ = load_settings(None, environ=environ)
    assert settings.freshness == (
        FreshnessRule("a:*", Freshness.MONOTONIC),
        FreshnessRule("*", Freshness.ALL),
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("*=newest", "mode for '*' must be one of 'all', 'monotonic', 'latest', got 'newest'"),
        ("cursor", "expected PATTERN=MODE, got 'cursor'"),
        ("=all", "has an empty channel pattern"),
    ],
)
def test_a_bad_freshness_rule_names_what_is_wrong(value: str, problem: str) -> None:
    environ = {"CENTRIFUGO_API_KEY": "k", "CENTRIFUGO_ASYNC_FRESHNESS": value}
    with pytest.raises(InvalidSetting) as error:
        load_settings(None, environ=environ)
    assert error.value.field == "freshness"
    assert problem in str(error.value)
    assert "$CENTRIFUGO_ASYNC_FRESHNESS" in str(error.value)
