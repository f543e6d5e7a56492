"""The command line's conventions, without servers: options, exit codes, --json, progress.

Every option of every command has help; a setting names its environment
variable and takes its default from a settings table, an action option reads
no environment. Usage errors, failures and fatal relay errors exit with
different codes, as the operations guide's table says. Progress is a bar on a
terminal and a few plain lines elsewhere.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import click
import pytest
from click.testing import CliRunner

import centrifugo_async.cli as cli
from centrifugo_async._progress import Progress
from centrifugo_async.cli import ExitCode, main
from centrifugo_async.exceptions import CentrifugoAuthError
from centrifugo_async.outbox.settings import FLAGS, Flag, ForwarderSettings
from centrifugo_async.relay.config import CONFIG_ENV
from centrifugo_async.relay.settings import SETTINGS, Bounds, OneOf

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"

ENVIRONMENT = (
    {s.env for s in SETTINGS}
    | {row.env for row in FLAGS}
    | {s.env for s in cli.OPERATOR_SETTINGS.values()}
    | {CONFIG_ENV}
)
CLEAN_ENV: dict[str, str | None] = dict.fromkeys(ENVIRONMENT)
"""Keeps the environment the suite runs in out of these tests."""


def commands(
    group: click.Group = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    """Every command below ``group``, with its path (``dlq replay``)."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def options(command: click.Command) -> list[click.Option]:
    """The command's own options (not --help / --version, which click adds)."""
    return [
        p
        for p in command.params
        if isinstance(p, click.Option) and not (p.is_eager and not p.expose_value)
    ]


def help_of(path: str) -> str:
    result = CliRunner().invoke(main, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_every_option_has_help_and_every_setting_shows_its_environment_variable() -> None:
    seen = 0
    for path, command in commands():
        text = help_of(path)
        for option in options(command):
            seen += 1
            name = f"{path} {option.opts[0]}"
            assert option.help and option.help.strip().endswith((".", ")")), f"{name}: no help"
            if isinstance(option, cli._ActionOption):
                assert option.envvar is None, f"{name} is an action: no environment variable"
                continue
            assert isinstance(option.envvar, str) and option.show_envvar, name
            assert re.fullmatch(r"CENTRIFUGO_(ASYNC|API)_[A-Z_]+", option.envvar), name
            assert f"env var: {option.envvar}" in text, f"{name}: --help hides its variable"
    assert seen > 80


def test_operator_settings_default_to_their_rows_and_read_their_variables() -> None:
    for path, command in commands():
        for option in options(command):
            if isinstance(option, cli._SettingOption) and option.from_environment:
                assert option.default == option.setting.default, f"{path} {option.opts[0]}"
    fields = {field.name: field for field in attrs.fields(ForwarderSettings)}
    for row in FLAGS:
        assert row.env.startswith("CENTRIFUGO_ASYNC_"), row.name
        default = fields[row.name].default
        if not isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            assert row.default == (None if default is attrs.NOTHING else default), row.name


@pytest.fixture
def forwarded(monkeypatch: pytest.MonkeyPatch) -> list[ForwarderSettings]:
    """``outbox forward`` runs no forwarder: the settings it would run with are kept."""
    import centrifugo_async.outbox.forwarder as forwarder

    captured: list[ForwarderSettings] = []

    async def forward(settings: ForwarderSettings, **_: Any) -> None:
        captured.append(settings)

    monkeypatch.setattr(forwarder, "forward", forward)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    return captured


def test_outbox_forward_defaults_are_the_library_defaults(
    forwarded: list[ForwarderSettings],
) -> None:
    dsn = "postgresql://app@db/app"
    result = CliRunner().invoke(main, ["outbox", "forward", "--dsn", dsn], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    (settings,) = forwarded
    expected = ForwarderSettings(
        dsn=dsn, redis_url="redis://127.0.0.1:6379/0", forwarder_id=settings.forwarder_id
    )
    assert settings == expected


def test_outbox_forward_reads_the_environment_and_flags_win(
    forwarded: list[ForwarderSettings],
) -> None:
    env = {
        **CLEAN_ENV,
        "CENTRIFUGO_ASYNC_OUTBOX_DSN": "postgresql://app@db/app",
        "CENTRIFUGO_ASYNC_OUTBOX_BATCH": "50",
        "CENTRIFUGO_ASYNC_OUTBOX_POLL_INTERVAL": "0.5",
        "CENTRIFUGO_ASYNC_OUTBOX_FORWARDER_ID": "fw-1",
        "CENTRIFUGO_ASYNC_SHARDS": "32",
        "CENTRIFUGO_ASYNC_REDIS_URL": "redis://10.0.0.5:6379/1",
    }
    result = CliRunner().invoke(main, ["outbox", "forward", "--batch", "70"], env=env)
    assert result.exit_code == 0, result.output
    (settings,) = forwarded
    assert (settings.batch, settings.poll_interval, settings.forwarder_id) == (70, 0.5, "fw-1")
    assert (settings.shards, settings.redis_url) == (32, "redis://10.0.0.5:6379/1")
    assert settings.dsn == "postgresql://app@db/app"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["stats"], {"CENTRIFUGO_ASYNC_STATS_SAMPLE": "soon"}, "not a number: 'soon'"),
        (["stats", "--sample", "-1"], {}, "'--sample': must be 0..3600, got -1.0"),
        (["dlq", "list", "--limit", "0"], {}, "'--limit': must be >= 1, got 0"),
        (["stats", "--redis-url", "http://x"], {}, "must start with one of"),
        (["outbox", "forward", "--dsn", "x", "--batch", "0"], {}, "must be 1..10000, got 0"),
        (
            ["outbox", "forward", "--dsn", "x"],
            {"CENTRIFUGO_ASYNC_OUTBOX_METRICS_PORT": "70000"},
            "must be 0..65535",
        ),
        (["publish", "c", "{}", "--key", "k"], {}, "Missing option '--object-version'"),
        (["stats", "--no-such-flag"], {}, "No such option"),
    ],
)
def test_a_bad_option_or_variable_is_a_usage_error(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(main, args, env={**CLEAN_ENV, **env})
    assert result.exit_code == ExitCode.USAGE == 2, result.output
    assert message in result.stderr
    if env:
        assert f"env var: '{next(iter(env))}'" in result.stderr, "the variable is named"
    else:
        assert "env var" not in result.stderr, "the value came from the command line"


def test_a_failure_exits_1_and_a_fatal_relay_error_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    missing_key = CliRunner().invoke(main, ["config", "check"], env=CLEAN_ENV)
    assert missing_key.exit_code == ExitCode.ERROR == 1
    assert missing_key.stderr.startswith("Error: api_key is empty")

    async def refused(settings: Any, **_: Any) -> None:
        raise CentrifugoAuthError("Centrifugo rejected the API key (HTTP 401)")

    monkeypatch.setattr(cli, "serve", refused)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    fatal = CliRunner().invoke(
        main, ["relay", "--metrics-port", "0"], env={**CLEAN_ENV, "CENTRIFUGO_API_KEY": "k"}
    )
    assert fatal.exit_code == ExitCode.FATAL == 3
    assert fatal.stderr == "Error: Centrifugo rejected the API key (HTTP 401)\n"
    assert len({code.value for code in ExitCode}) == len(ExitCode)


def test_the_operations_guide_documents_the_exit_codes() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    start = text.index("<!-- exit codes -->")
    table = text[start : text.index("<!-- end of exit codes -->")]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", table, re.MULTILINE)
    assert rows == [(str(code.value), code.name) for code in ExitCode]


def test_config_check_json_masks_secrets_and_names_sources() -> None:
    env = {
        **CLEAN_ENV,
        "CENTRIFUGO_API_KEY": "s3cret-key",
        "CENTRIFUGO_ASYNC_REDIS_URL": "redis://:pw@10.0.0.5:6379/0",
    }
    result = CliRunner().invoke(
        main,
        ["config", "check", "--json", "--late-delivery", "typing:*=2s,orders:*=never"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["valid"] is True and body["warnings"] == []
    values = body["settings"]
    assert set(values) == {s.name for s in SETTINGS}
    assert values["api_key"] == {
        "value": "***",
        "toml": "centrifugo.api_key",
        "source": "$CENTRIFUGO_API_KEY",
    }
    assert values["redis_url"]["value"] == "redis://:***@10.0.0.5:6379/0"
    assert values["late_delivery"]["value"] == [
        {"pattern": "typing:*", "max_age_ms": 2000},
        {"pattern": "orders:*", "max_age_ms": None},
    ]
    assert values["max_batch"] == {"value": 500, "toml": "relay.max_batch", "source": "default"}
    assert "s3cret" not in result.output and ":pw@" not in result.output


def test_publish_help_names_the_object_version_not_the_program_version() -> None:
    text = help_of("publish")
    assert "--object-version INTEGER RANGE The object's version" in text
    assert "--version" not in text


def test_python_m_prints_the_program_name() -> None:
    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "centrifugo_async", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    assert run("--help").startswith("Usage: centrifugo-async [OPTIONS] COMMAND [ARGS]...")
    assert run("dlq", "replay", "--help").startswith("Usage: centrifugo-async dlq replay ")
    assert re.fullmatch(r"centrifugo-async, version \S+\n", run("--version"))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_plain_lines_every_so_often_off_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("replaying", every=1000, stream=stream) as progress:
        for done in range(1, 2501):
            progress.update(done, 2500, f"... {done} of 2500")
    assert stream.getvalue() == "... 1000 of 2500\n... 2000 of 2500\n"
    assert not progress.on_terminal

    first = io.StringIO()
    with Progress("draining", every=1, first_line=True, stream=first) as progress:
        for done in (0, 0, 1, 1, 3):
            progress.update(done, 3, f"{done} drained")
    assert first.getvalue() == "0 drained\n1 drained\n3 drained\n"


def test_progress_is_a_bar_on_a_terminal() -> None:
    stream = _Terminal()
    with Progress("replaying dead letters", stream=stream) as progress:
        for done in range(1, 4):
            progress.update(done, 3, f"... {done} of 3")
    assert progress.on_terminal
    output = stream.getvalue()
    assert "replaying dead letters" in output and "3/3" in output and "#" in output
    assert "... 1 of 3" not in output


def operator_settings_reference() -> str:
    """The operations guide's table of the operator commands' settings, from the commands."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path, command in commands():
        if path in ("relay", "config check"):
            continue  # the relay's settings have their own table
        for option in options(command):
            if not isinstance(option, cli._SettingOption):
                continue
            setting = option.setting
            flag = f"`{option.opts[0]}`" + (
                f" / `{option.secondary_opts[0]}`" if option.secondary_opts else ""
            )
            row = rows.setdefault(
                (flag, setting.env, setting.help), {"setting": setting, "commands": []}
            )
            row["commands"].append(f"`{path}`")
    lines = [
        "| flag, environment | default | allowed | meaning | commands |",
        "|---|---|---|---|---|",
    ]
    for (flag, env, help_text), row in rows.items():
        setting = row["setting"]
        check = setting.check
        if isinstance(check, OneOf):
            allowed = ", ".join(f"`{choice}`" for choice in check.choices)
        elif isinstance(check, Bounds | Flag):
            allowed = f"`{check.describe()}`"
        else:
            allowed = "" if check is None else check.describe()
        default = f"`{setting.shown_default}`" if setting.shown_default else "none"
        used_by = ", ".join(row["commands"])
        lines.append(f"| {flag}<br>`{env}` | {default} | {allowed} | {help_text} | {used_by} |")
    return "\n".join(lines)


def test_the_operations_guide_lists_every_operator_setting() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    start_marker = "<!-- The operator settings table"
    start = text.index("\n", text.index(start_marker)) + 1
    end = text.index("<!-- end of operator settings table -->")
    expected = operator_settings_reference()
    assert text[start:end].strip() == expected, (
        "docs/operations.md: the operator settings table is out of date; between the markers "
        f"put\n{expected}"
    )


def test_the_relay_id_is_a_flag_too() -> None:
    text = help_of("relay")
    assert "--relay-id TEXT This relay's id" in text
    assert "env var: CENTRIFUGO_ASYNC_RELAY_ID" in text
    result = CliRunner().invoke(
        main,
        ["config", "check", "--json", "--relay-id", "relay-a"],
        env={**CLEAN_ENV, "CENTRIFUGO_API_KEY": "k"},
    )
    relay_id = json.loads(result.stdout)["settings"]["relay_id"]
    assert relay_id == {"value": "relay-a", "toml": "relay.id", "source": "--relay-id"}
