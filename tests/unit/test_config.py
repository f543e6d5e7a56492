"""Relay configuration: file < environment < flags, clear errors, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from centrifugo_async import ConfigError
from centrifugo_async.relay.config import describe, load_settings, parse_duration_ms
from centrifugo_async.relay.settings import LatePolicy

CONFIG = """
[redis]
url = "redis://:s3cret-pw@127.0.0.1:6380/0"
prefix = "app.events"

[centrifugo]
api_key = "file-key-123"
forward_version = ["doc:*"]

[relay]
max_batch = 200
lease_ttl = 6

[late_delivery]
"typing:*" = "2s"
"orders:*" = "never"
"*" = 60

[metrics]
port = 0

[log]
format = "json"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG)
    return path


def test_flags_win_over_environment_over_file(config_file: Path) -> None:
    env = {"CENTRIFUGO_ASYNC_MAX_BATCH": "300", "CENTRIFUGO_ASYNC_LEASE_TTL": "8"}
    settings, origin = load_settings(config_file, env, {"max_batch": 400})
    assert settings.max_batch == 400 and origin["max_batch"] == "--max-batch"
    assert settings.lease_ttl == 8.0 and origin["lease_ttl"] == "$CENTRIFUGO_ASYNC_LEASE_TTL"
    assert settings.prefix == "app.events" and "relay.toml" in origin["prefix"]
    assert settings.request_timeout == 5.0 and origin["request_timeout"] == "default"
    assert settings.log_format == "json" and settings.metrics_port == 0


def test_late_delivery_policy_and_version_forwarding(config_file: Path) -> None:
    settings, _ = load_settings(config_file, {}, {})
    assert settings.late_delivery == (
        LatePolicy("typing:*", 2000),
        LatePolicy("orders:*", None),
        LatePolicy("*", 60_000),
    )
    assert settings.max_age_ms("typing:room-1", None) == 2000
    assert settings.max_age_ms("orders:42", None) is None  # first match wins: never
    assert settings.max_age_ms("chat:1", None) == 60_000
    assert settings.max_age_ms("typing:room-1", 500) == 500  # the envelope's ttl wins
    assert settings.forwards_version("doc:7") and not settings.forwards_version("orders:1")


def test_the_well_known_environment_variables(tmp_path: Path) -> None:
    env = {
        "CENTRIFUGO_ASYNC_REDIS_URL": "redis://10.0.0.1:6379/1",
        "CENTRIFUGO_API_URL": "http://10.0.0.2:8000/api",
        "CENTRIFUGO_API_KEY": "env-key",
        "CENTRIFUGO_ASYNC_REDIS_CLUSTER": "true",
        "CENTRIFUGO_ASYNC_LATE_DELIVERY": "typing:*=1.5s, cursor:*=250ms",
    }
    settings, _ = load_settings(None, env, {})
    assert settings.redis_url == "redis://10.0.0.1:6379/1" and settings.redis_cluster
    assert settings.api_url == "http://10.0.0.2:8000/api" and settings.api_key == "env-key"
    assert [p.max_age_ms for p in settings.late_delivery] == [1500, 250]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[relay]\nmax_bach = 3\n", "unknown key relay.max_bach"),
        ("[relays]\nx = 1\n", "unknown key relays.x"),
        ("[relay]\nmax_batch = -3\n", "max_batch must be > 0, got -3 (from relay.max_batch in"),
        ("[relay]\nmax_batch = 'many'\n", "relay.max_batch in"),
        ("[late_delivery]\n'typing:*' = 'soon'\n", "not a duration"),
        ("[redis]\nurl = 'http://nope'\n", "redis_url must start with"),
        ("[log]\nformat = 'xml'\n", "log_format must be 'console' or 'json'"),
        ("[relay\n", "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key_and_source(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        content + "\n[centrifugo]\napi_key = 'k'\n" if content != "[relay\n" else content
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path, {}, {})
    assert message in str(error.value)


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"\$CENTRIFUGO_ASYNC_LEASE_TTL"):
        load_settings(None, {"CENTRIFUGO_ASYNC_LEASE_TTL": "abc", "CENTRIFUGO_API_KEY": "k"}, {})
    with pytest.raises(ConfigError, match="api_key is empty"):
        load_settings(None, {}, {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings("/nonexistent/relay.toml", {}, {})


def test_describe_masks_secrets_and_shows_sources(config_file: Path) -> None:
    settings, origin = load_settings(config_file, {}, {"max_batch": 50})
    text = describe(settings, origin)
    assert "file-key-123" not in text and "s3cret-pw" not in text
    assert 'api_key = "***"' in text
    assert 'url = "redis://:***@127.0.0.1:6380/0"' in text
    assert "max_batch = 50  # --max-batch" in text
    assert '"orders:*" = "never"' in text


@pytest.mark.parametrize(
    ("value", "ms"),
    [("2s", 2000), ("500ms", 500), ("1.5m", 90_000), (3, 3000), (0.25, 250), ("never", None)],
)
def test_durations(value: object, ms: int | None) -> None:
    assert parse_duration_ms(value) == ms
