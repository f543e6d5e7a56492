"""Relay configuration: file < environment < flags, clear errors, secrets masked."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from centrifugo_async import ConfigError
from centrifugo_async.cli import config_check, relay
from centrifugo_async.relay.config import (
    CONFIG_ENV,
    KINDS,
    describe,
    load_settings,
    parse_duration_ms,
)
from centrifugo_async.relay.settings import (
    SETTINGS,
    Bounds,
    Check,
    InvalidSetting,
    LatePolicy,
    OneOf,
    RelaySettings,
    Setting,
    setting_named,
)

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


# --- The one settings table ------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
RELAY_TOML = ROOT / "examples" / "relay.toml"
OPERATIONS = ROOT / "docs" / "operations.md"
TABLE_START = (
    "<!-- The settings table, generated from RelaySettings: tests/unit/test_config.py "
    "prints it when it is out of date. -->"
)
TABLE_END = "<!-- end of settings table -->"
CLEAN_ENV: dict[str, str | None] = {s.env: None for s in SETTINGS} | {CONFIG_ENV: None}
"""Keeps the environment the suite runs in out of the CLI tests."""


def test_a_bad_value_names_its_own_setting_not_one_sharing_its_prefix() -> None:
    """``max_batch`` is a prefix of ``max_batch_bytes``: the error must not confuse them."""
    with pytest.raises(InvalidSetting) as error:
        load_settings(None, {"CENTRIFUGO_ASYNC_MAX_BATCH_BYTES": "0", "CENTRIFUGO_API_KEY": "k"})
    assert error.value.field == "max_batch_bytes"
    assert str(error.value) == (
        "max_batch_bytes must be > 0, got 0 (from $CENTRIFUGO_ASYNC_MAX_BATCH_BYTES)"
    )
    with pytest.raises(InvalidSetting) as error:
        load_settings(None, {"CENTRIFUGO_API_KEY": "k"}, {"max_batch_bytes": -1})
    assert error.value.field == "max_batch_bytes" and "(from --max-batch-bytes)" in str(error.value)
    with pytest.raises(InvalidSetting) as error:
        load_settings(None, {"CENTRIFUGO_ASYNC_LEASE_TTL": "soon", "CENTRIFUGO_API_KEY": "k"})
    assert error.value.field == "lease_ttl"


def _just_outside(bounds: Bounds) -> list[float]:
    """Values each limit of ``bounds`` refuses."""
    outside = []
    if bounds.above is not None:
        outside.append(bounds.above)
    if bounds.low is not None and not (bounds.zero_unsets and bounds.low - 1 == 0):
        outside.append(bounds.low - 1)
    if bounds.zero_unsets:
        outside.append(-1)
    if bounds.high is not None:
        outside.append(bounds.high + 1)
    return outside


def _just_inside(bounds: Bounds) -> list[float]:
    inside = [] if bounds.low is None else [bounds.low]
    return [*inside, *([] if bounds.high is None else [bounds.high])]


BOUNDED = [s for s in SETTINGS if isinstance(s.check, Bounds)]


@pytest.mark.parametrize("setting", BOUNDED, ids=lambda s: s.name)
def test_bounds_are_enforced_from_the_table(setting: Setting) -> None:
    assert isinstance(setting.check, Bounds)
    env = {"CENTRIFUGO_API_KEY": "k"}
    for value in _just_outside(setting.check):
        with pytest.raises(InvalidSetting) as error:
            load_settings(None, env, {setting.name: value})
        assert error.value.field == setting.name
        assert str(error.value).startswith(f"{setting.name} must be ")
        assert str(error.value).endswith(f"(from {setting.flag})")
    for value in _just_inside(setting.check):
        settings, origin = load_settings(None, {**env, setting.env: str(value)})
        assert getattr(settings, setting.name) == value
        assert origin[setting.name] == f"${setting.env}"


def test_a_count_that_zero_unsets_takes_0_as_not_set() -> None:
    settings, origin = load_settings(
        None, {"CENTRIFUGO_API_KEY": "k", "CENTRIFUGO_ASYNC_SHARDS": "0"}
    )
    assert settings.shards is None
    assert origin["shards"] == "$CENTRIFUGO_ASYNC_SHARDS"
    assert RelaySettings(api_key="k", shards=0).shards is None
    check = setting_named("shards").check
    assert isinstance(check, Bounds)
    assert check.describe() == "0 or 1<=x<=4096"


FLOATS = [s for s in SETTINGS if s.type is float]


@pytest.mark.parametrize("setting", FLOATS, ids=lambda s: s.name)
@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_durations_must_be_finite(setting: Setting, text: str) -> None:
    with pytest.raises(InvalidSetting, match="must be a finite number") as error:
        load_settings(None, {"CENTRIFUGO_API_KEY": "k", setting.env: text})
    assert error.value.field == setting.name


@pytest.mark.parametrize("age", ["inf", "-inf", "nan"])
def test_late_delivery_ages_must_be_finite(tmp_path: Path, age: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(f"[late_delivery]\n'typing:*' = {age}\n")
    with pytest.raises(InvalidSetting, match="not a finite duration") as error:
        load_settings(path, {"CENTRIFUGO_API_KEY": "k"})
    assert error.value.field == "late_delivery"


def test_every_setting_is_read_by_its_type() -> None:
    assert FLOATS, "the durations are float settings"
    for setting in SETTINGS:
        assert setting.type in KINDS, f"{setting.name}: no ValueKind for {setting.type}"
        assert setting.help.endswith("."), f"{setting.name}: help is a sentence"


def _options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize("command", [relay, config_check], ids=["relay", "config check"])
def test_every_setting_has_a_flag_naming_its_env_var_and_default(command: click.Command) -> None:
    options = _options(command)
    json_flag = {"as_json"} if command is config_check else set()
    assert set(options) == {s.name for s in SETTINGS} | {"config_file"} | json_flag
    help_text = " ".join(CliRunner().invoke(command, ["--help"]).output.split())
    for setting in SETTINGS:
        option = options[setting.name]
        assert setting.flag in option.opts
        assert option.envvar == setting.env and option.show_envvar
        assert f"env var: {setting.env}" in help_text
        shown = "required" if setting.required else f"default: {setting.shown_default}"
        assert shown in help_text, f"--help does not show {setting.name}'s {shown}"
    assert options["config_file"].show_envvar and "CENTRIFUGO_ASYNC_CONFIG" in help_text


def test_every_setting_appears_in_config_check_with_its_source() -> None:
    result = CliRunner().invoke(
        config_check,
        ["--max-batch-bytes", "2048", "--retry-max", "7"],
        env={**CLEAN_ENV, "CENTRIFUGO_API_KEY": "k", "CENTRIFUGO_ASYNC_IDLE_WAIT": "0.5"},
    )
    assert result.exit_code == 0, result.output
    sections = {s.toml.rpartition(".")[0] or s.toml for s in SETTINGS}
    for section in sections:
        assert f"[{section}]" in result.stdout
    for setting in SETTINGS:
        key = setting.toml.rpartition(".")[2]
        if "." in setting.toml:
            assert re.search(rf"^{key} = .*  # ", result.stdout, re.MULTILINE), setting.name
    assert "max_batch_bytes = 2048  # --max-batch-bytes" in result.stdout
    assert "retry_max = 7.0  # --retry-max" in result.stdout
    assert "idle_wait = 0.5  # $CENTRIFUGO_ASYNC_IDLE_WAIT" in result.stdout


def test_flags_are_parsed_like_the_environment_and_win_over_it() -> None:
    result = CliRunner().invoke(
        config_check,
        [
            *("--late-delivery", "typing:*=2s", "--forward-version", "doc:*, obj:*"),
            *("--shards", "8", "--no-redis-cluster"),
        ],
        env={
            **CLEAN_ENV,
            "CENTRIFUGO_API_KEY": "k",
            "CENTRIFUGO_ASYNC_SHARDS": "4",
            "CENTRIFUGO_ASYNC_REDIS_CLUSTER": "yes",
        },
    )
    assert result.exit_code == 0, result.output
    assert '"typing:*" = "2000ms"  # --late-delivery' in result.stdout
    assert 'forward_version = ["doc:*", "obj:*"]  # --forward-version' in result.stdout
    assert "shards = 8  # --shards" in result.stdout
    assert "cluster = false  # --redis-cluster" in result.stdout
    bad = CliRunner().invoke(config_check, ["--max-batch-bytes", "many"], env=CLEAN_ENV)
    assert bad.exit_code == 2 and "not an integer: 'many'" in bad.output
    assert "env var" not in bad.output  # the bad value came from the flag
    zero = CliRunner().invoke(
        config_check, ["--max-batch-bytes", "0"], env={**CLEAN_ENV, "CENTRIFUGO_API_KEY": "k"}
    )
    assert zero.exit_code == 1
    assert "max_batch_bytes must be > 0, got 0 (from --max-batch-bytes)" in zero.output


def test_relay_toml_example_names_every_flag() -> None:
    text = RELAY_TOML.read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert re.search(rf"{setting.env}\b.*{setting.flag}\b", text), (
            f"examples/relay.toml: the comment of {setting.toml} names no {setting.flag}"
        )


def settings_reference() -> str:
    """The operations guide's table of settings, generated from ``SETTINGS``."""

    def allowed(check: Check | None) -> str:
        if isinstance(check, Bounds):
            return f"`{check.describe()}`"
        if isinstance(check, OneOf):
            return ", ".join(f"`{choice}`" for choice in check.choices)
        return "" if check is None else check.describe()

    rows = [
        "| TOML key, environment, flag | default | allowed | meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        key = f"`{s.toml}`" if "." in s.toml else f"`[{s.toml}]`"
        flag = f"`{s.flag}` / `--no-{s.flag[2:]}`" if s.type is bool else f"`{s.flag}`"
        default = s.shown_default if s.shown_default in ("none", "required") else None
        default = default or f"`{s.shown_default}`"
        names = f"{key}<br>`{s.env}`<br>{flag}"
        rows.append(f"| {names} | {default} | {allowed(s.check)} | {s.help} |")
    return "\n".join(rows)


def test_operations_guide_shows_the_settings_table() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    expected = settings_reference()
    assert text[start:end].strip() == expected, (
        f"docs/operations.md: the settings table is out of date; between the markers put\n"
        f"{expected}"
    )
