"""Settings that make no sense are refused, and secrets stay out of sight.

Every duration has a sane range, hosts are never empty, the prefix has no
braces and URLs name a host: each refused at ``config check`` and at start
with one line naming the setting. The API key comes from the environment or a
file; passwords in URLs are masked wherever a URL is printed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from centrifugo_async import ConfigError, RelayFatalError
from centrifugo_async.cli import config_check, relay
from centrifugo_async.logs import configure_logging, mask_url, secrets_of
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.config import describe, load_settings
from centrifugo_async.relay.settings import SETTINGS, InvalidSetting
from devstack import free_port

CLEAN_ENV: dict[str, str | None] = {s.env: None for s in SETTINGS} | {
    "CENTRIFUGO_ASYNC_CONFIG": None
}
KEY_ENV = {**CLEAN_ENV, "CENTRIFUGO_API_KEY": "k"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lease-ttl", "0.0001"], "lease_ttl must be 1..600, got 0.0001 (from --lease-ttl)"),
        (["--lease-ttl", "86400"], "lease_ttl must be 1..600, got 86400.0"),
        (["--request-timeout", "0.001"], "request_timeout must be 0.1..300"),
        (["--retry-initial", "0"], "retry_initial must be 0.001..60"),
        (["--retry-max", "1e9"], "retry_max must be 0.01..300"),
        (["--idle-wait", "0"], "idle_wait must be 0.01..60"),
        (["--stuck-after", "0.5"], "stuck_after must be 1..86400"),
        (["--lease-ttl", "nan"], "lease_ttl must be a finite number, got nan"),
        (["--metrics-host", ""], "metrics_host must be a host name or IP address, got ''"),
        (["--metrics-host", " 10.0.0.1"], "metrics_host must be a host name or IP address"),
        (["--prefix", "{x}"], "prefix must be non-empty, without braces"),
        (["--prefix", ""], "prefix must be non-empty"),
        (["--api-url", "http://"], "api_url must name a host, got 'http://'"),
        (["--api-url", "http://:8000/api"], "api_url must name a host"),
        (["--api-url", "http://host:port/api"], "api_url is not a valid URL"),
        (["--redis-url", "redis://"], "redis_url must name a host, got 'redis://'"),
        (["--redis-url", "unix://"], "redis_url must name a socket path"),
    ],
)
@pytest.mark.parametrize("command", [config_check, relay], ids=["config check", "relay"])
def test_nonsense_is_refused_with_one_line(
    command: click.Command, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(command, args, env=KEY_ENV)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in lines[0]


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://redis.internal", "unix:///run/redis.sock"]
)
def test_sane_urls_are_accepted(url: str) -> None:
    settings, _ = load_settings(None, {"CENTRIFUGO_API_KEY": "k"}, {"redis_url": url})
    assert settings.redis_url == url


PASSWORDS = ["redis-pw-1", "query-pw-2", "api-pw-3"]
REDIS_URL = f"redis://user:{PASSWORDS[0]}@10.0.0.5:6379/0"
QUERY_URL = f"redis://10.0.0.5:6379/0?db=0&password={PASSWORDS[1]}"
API_URL = f"http://relay:{PASSWORDS[2]}@10.0.0.6:8000/api"


def test_passwords_in_urls_are_masked_in_config_check_and_repr() -> None:
    for redis_url in (REDIS_URL, QUERY_URL):
        env = {**KEY_ENV, "CENTRIFUGO_ASYNC_REDIS_URL": redis_url, "CENTRIFUGO_API_URL": API_URL}
        result = CliRunner().invoke(config_check, [], env=env)
        assert result.exit_code == 0, result.output
        assert not any(p in result.output for p in PASSWORDS)
        assert 'url = "redis://user:***@10.0.0.5:6379/0"' in result.output or (
            'url = "redis://10.0.0.5:6379/0?db=0&password=***"' in result.output
        )
        assert 'api_url = "http://relay:***@10.0.0.6:8000/api"' in result.output
    settings = RelaySettings(api_key="k", redis_url=QUERY_URL, api_url=API_URL)
    assert not any(p in repr(settings) for p in PASSWORDS)
    assert "password=***" in repr(settings)


def test_a_refused_url_is_masked_in_the_error() -> None:
    result = CliRunner().invoke(
        config_check, ["--redis-url", f"redsi://:{PASSWORDS[0]}@h/0"], env=KEY_ENV
    )
    assert result.exit_code == 1
    assert "redis_url must start with" in result.output and "redsi://:***@h/0" in result.output
    assert PASSWORDS[0] not in result.output


def test_log_lines_never_show_url_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "console", secrets_of("the-api-key", QUERY_URL, API_URL))
    try:
        logging.getLogger("centrifugo_async.relay").warning(
            "failed url=%s key=%s other=%s", QUERY_URL, "the-api-key", API_URL
        )
    finally:
        logging.getLogger().handlers.clear()
    line = capsys.readouterr().err
    assert "failed url=" in line
    assert not any(p in line for p in [*PASSWORDS[1:], "the-api-key"])


async def test_start_up_errors_and_waits_mask_the_api_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = f"http://relay:{PASSWORDS[2]}@127.0.0.1:{free_port()}/api"
    settings = RelaySettings(api_key="k", api_url=closed, metrics_port=0)
    with pytest.raises(RelayFatalError) as error:
        await asyncio.wait_for(serve(settings, startup_timeout=0.3), 10)
    assert "http://relay:***@127.0.0.1" in str(error.value)
    assert PASSWORDS[2] not in str(error.value) + caplog.text
    waits = [r for r in caplog.records if r.getMessage() == "waiting for Centrifugo"]
    assert waits and all(r.api.startswith("http://relay:***@127.0.0.1") for r in waits)


def test_mask_url_keeps_everything_but_the_passwords() -> None:
    assert mask_url("http://h:8000/api?x=a@b") == "http://h:8000/api?x=a@b"
    assert mask_url("redis://name@h/0") == "redis://name@h/0"
    assert mask_url("rediss://:p@h?PASSWORD=q#f") == "rediss://:***@h?PASSWORD=***#f"
    assert secrets_of("k", "redis://:p%40ss@h") == ["k", "p%40ss", "p@ss"]


# --- The API key from a file -------------------------------------------------------------------


def test_the_api_key_comes_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("file-secret-key\n")
    settings, origin = load_settings(None, {"CENTRIFUGO_API_KEY_FILE": str(key_file)})
    assert settings.api_key == "file-secret-key"
    assert origin["api_key"] == f"file {key_file} ($CENTRIFUGO_API_KEY_FILE)"
    text = describe(settings, origin)
    assert "file-secret-key" not in text
    assert f'api_key = "***"  # file {key_file}' in text


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("", {}, "is empty"),
        (None, {}, "cannot read api_key_file"),
        ("k2", {"CENTRIFUGO_API_KEY": "k1"}, "give the API key once"),
    ],
)
def test_a_bad_api_key_file_is_refused(
    tmp_path: Path, content: str | None, extra: dict[str, str], message: str
) -> None:
    key_file = tmp_path / "api-key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(InvalidSetting, match=message) as error:
        load_settings(None, {"CENTRIFUGO_API_KEY_FILE": str(key_file), **extra})
    assert error.value.field == "api_key_file"


def test_a_missing_key_names_the_safe_ways_to_give_it() -> None:
    with pytest.raises(ConfigError, match="set CENTRIFUGO_API_KEY or pass --api-key-file"):
        load_settings(None, {}, {})


def test_a_secret_on_the_command_line_is_warned_about() -> None:
    result = CliRunner().invoke(
        config_check, ["--api-key", "flag-key", "--redis-url", REDIS_URL], env=CLEAN_ENV
    )
    assert result.exit_code == 0, result.output
    assert "# warning: --api-key carries a secret every local user can read" in result.stderr
    assert "# warning: --redis-url carries a secret" in result.stderr
    quiet = CliRunner().invoke(config_check, ["--redis-url", "redis://10.0.0.5/0"], env=KEY_ENV)
    assert quiet.exit_code == 0, quiet.output
    assert "warning" not in quiet.stderr
    help_text = " ".join(CliRunner().invoke(relay, ["--help"]).output.split())
    assert "visible to every local user (ps)" in help_text
