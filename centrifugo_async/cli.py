"""``centrifugo-async``: the relay service and the operator's tools.

Each command is a thin shell: it parses flags, calls the library and turns the
library's typed errors into one clear line and an exit code from ``ExitCode``.

Options come in two kinds. A *setting* (where the queues are, a shard count, a
timeout) is derived from its row in a settings table (the relay's
``RelaySettings``, the forwarder's ``ForwarderSettings``, or the few rows of the
operator commands below): its flag, environment variable, default, limits and
help are written once, there. An *action* option says what this one run does
(a message's key and version, a filter, ``--yes``, ``--json``) and is never read
from the environment, where a forgotten variable would silently change what a
command publishes or deletes.

Results go to stdout (one JSON document with ``--json``); errors, warnings and
progress go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import json
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import attrs
import click
import redis.exceptions

from . import admin
from ._gc import tune_for_a_service
from ._progress import Progress
from .connection import DEFAULT_TIMEOUT, SyncRedisClient, sync_client
from .exceptions import CentrifugoAsyncError, RelayFatalError
from .logs import configure_logging, secrets_of
from .outbox.settings import DSN_ENV
from .outbox.settings import FLAGS as FORWARDER_FLAGS
from .protocol import topology
from .protocol.envelope import MAX_OBJECT_VERSION, encode_envelope
from .protocol.keys import Keyspace
from .protocol.routing import DEFAULT_SHARDS, MAX_SHARDS
from .publisher import Publisher
from .relay import config
from .relay.service import serve
from .relay.settings import (
    ENV_PREFIX,
    SETTINGS,
    URL_SEPARATOR,
    Bounds,
    Check,
    OneOf,
    RelaySettings,
    Setting,
    UrlList,
    setting_named,
)

__all__ = ["OPERATOR_SETTINGS", "ExitCode", "main"]

F = TypeVar("F", bound=Callable[..., Any])

PROGRAM = "centrifugo-async"


class ExitCode(enum.IntEnum):
    """The exit status of every command; the operations guide documents this table."""

    OK = 0
    """Done (``relay`` and ``outbox forward``: stopped by SIGTERM or SIGINT)."""
    ERROR = 1
    """The command could not do its work: bad configuration, Redis or PostgreSQL
    unavailable, nothing recorded for the prefix, a refused reshard, a declined
    confirmation, an interrupt (Ctrl-C)."""
    USAGE = 2
    """The command line is wrong (click's usage errors): an unknown option, a missing
    or malformed value, an option's environment variable that does not parse."""
    FATAL = 3
    """The relay stopped on a fatal condition: Centrifugo refused the API key, the API
    URL is wrong, the shard count differs from the recorded one, or Centrifugo did
    not answer within the start-up wait."""


class _FatalError(click.ClickException):
    """A ``RelayFatalError``, reported as one line with its own exit code."""

    exit_code = ExitCode.FATAL


def _friendly_errors(func: F) -> F:
    """Report library and Redis errors as one line, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RelayFatalError as exc:
            raise _FatalError(str(exc)) from None
        except (CentrifugoAsyncError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        except redis.exceptions.RedisError as exc:
            raise click.ClickException(f"Redis is unavailable: {exc}") from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _errors_as_log_lines(log_format: str, logger: str) -> Iterator[None]:
    """With JSON logs, the error that ends a long-running command is a JSON line too.

    Instead of click's plain ``Error: ...`` line (or a traceback), the error is
    logged with its ``error`` text and ``exit_code``, and the command exits with
    that code, so every line the process writes parses as JSON. Console logs
    keep click's line.
    """
    if log_format != "json":
        yield
        return
    try:
        yield
    except Exception as exc:
        code, text, expected = ExitCode.ERROR, str(exc).strip(), True
        if isinstance(exc, RelayFatalError):
            code = ExitCode.FATAL
        elif isinstance(exc, redis.exceptions.RedisError):
            text = f"Redis is unavailable: {text}"
        elif type(exc).__module__.partition(".")[0] == "psycopg":
            text = f"PostgreSQL: {text}"
        elif not isinstance(exc, CentrifugoAsyncError | ValueError):
            text, expected = f"unexpected error: {exc!r}", False
        logging.getLogger(logger).error(
            "stopped by an error",
            extra={"error": text, "exit_code": int(code)},
            exc_info=not expected,
        )
        raise click.exceptions.Exit(code) from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


# --- options ------------------------------------------------------------------------


class _SettingOption(click.Option):
    """The flag of one setting, derived from its row in a settings table.

    For ``relay`` and ``config check`` (``from_environment=False``) it has no
    click default (None means "not given") and names the setting's environment
    variable in ``--help`` without reading it: ``config.load_settings`` reads
    the environment itself, to keep flags > environment > file and to say where
    each value came from. For the operator commands click reads the flag, else
    the environment variable, else the row's default; the text is parsed as the
    relay parses it and checked against the row's limits, a bad value being a
    usage error.
    """

    def __init__(
        self,
        param_decls: Sequence[str],
        *,
        setting: Setting,
        from_environment: bool = False,
        **kwargs: Any,
    ) -> None:
        self.setting = setting
        self.from_environment = from_environment
        if isinstance(setting.check, OneOf):
            kwargs["type"] = click.Choice(
                setting.check.choices, case_sensitive=not setting.check.ignore_case
            )
        elif setting.type is not bool:
            kwargs.update(
                type=click.STRING, metavar=config.kind_of(setting).metavar, callback=self._parse
            )
            if isinstance(setting.check, UrlList):
                kwargs["multiple"] = True
        kwargs.setdefault("help", setting.help)
        super().__init__(
            param_decls,
            default=setting.default if from_environment else None,
            envvar=setting.env,
            show_envvar=True,
            **kwargs,
        )

    def _parse(
        self, ctx: click.Context, param: click.Parameter, value: str | tuple[str, ...] | None
    ) -> Any:
        """The text parsed as the setting's TOML and environment values are (and checked).

        A repeatable flag (a ``UrlList``) arrives as a tuple: each repetition is
        one item of the list (and may itself hold several, comma-separated).
        """
        if isinstance(value, tuple):
            value = URL_SEPARATOR.join(value) if value else None
        if value is None:
            return None
        try:
            parsed = config.parse_value(self.setting, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
        if self.from_environment and self.setting.check is not None:
            problem = self.setting.check.problem(parsed)
            if problem is not None:
                raise click.BadParameter(problem, ctx, param)
        return parsed

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return super().resolve_envvar_value(ctx) if self.from_environment else None

    def get_error_hint(self, ctx: click.Context | None) -> str:
        """The environment variable only when the bad value came from it."""
        source = ctx.get_parameter_source(self.name) if ctx is not None and self.name else None
        if source is click.core.ParameterSource.ENVIRONMENT:
            return super().get_error_hint(ctx)
        return click.Parameter.get_error_hint(self, ctx)

    def get_help_extra(self, ctx: click.Context) -> click.types.OptionHelpExtra:
        extra = super().get_help_extra(ctx)
        if self.setting.required:
            extra["required"] = "required"
        elif self.setting.shown_default and not self.required:
            extra["default"] = self.setting.shown_default
        described = self.setting.check.describe() if self.setting.check is not None else ""
        if described and not isinstance(self.setting.check, OneOf):
            extra["range"] = described
        return extra


class _ActionOption(click.Option):
    """An option saying what this one run does: never read from the environment.

    ``shown_required`` marks it required in ``--help`` when the command checks
    that itself (an option with a deprecated second name).
    """

    def __init__(
        self, param_decls: Sequence[str], *, shown_required: bool = False, **kwargs: Any
    ) -> None:
        self.shown_required = shown_required
        super().__init__(param_decls, **kwargs)

    def get_help_extra(self, ctx: click.Context) -> click.types.OptionHelpExtra:
        extra = super().get_help_extra(ctx)
        if self.shown_required:
            extra["required"] = "required"
        return extra


def _action(*param_decls: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*param_decls, cls=_ActionOption, **kwargs)


def _decls(setting: Setting) -> str:
    if setting.type is bool:
        return f"{setting.flag}/--no-{setting.name.replace('_', '-')}"
    return setting.flag


def _setting_option(setting: Setting, **kwargs: Any) -> Callable[[F], F]:
    """An operator command's flag for ``setting``: click reads it, its variable or its default."""
    return click.option(
        _decls(setting), cls=_SettingOption, setting=setting, from_environment=True, **kwargs
    )


def _row(
    name: str,
    type: object,
    default: Any,
    env: str,
    help: str,
    check: Check | None = None,
    shown_default: str = "",
) -> Setting:
    """A row of a settings table that lives outside the relay's (no TOML key)."""
    shown = shown_default or ("" if default is None else str(default))
    return Setting(
        name=name,
        type=type,
        default=default,
        toml="",
        env=env,
        help=help,
        check=check,
        secret=False,
        required=False,
        missing="",
        shown_default=shown,
    )


OPERATOR_SETTINGS: dict[str, Setting] = {
    row.name: row
    for row in (
        _row(
            "sample",
            float,
            1.0,
            ENV_PREFIX + "STATS_SAMPLE",
            "Seconds to sample the delivery rate over (0: no rate).",
            Bounds(low=0, high=3600),
        ),
        _row(
            "limit",
            int,
            50,
            ENV_PREFIX + "DLQ_LIMIT",
            "Most dead letters shown.",
            Bounds(low=1),
        ),
        _row(
            "timeout",
            float,
            admin.RESHARD_TIMEOUT,
            ENV_PREFIX + "RESHARD_TIMEOUT",
            "Seconds to wait for the shards to drain before giving up (changing nothing).",
            Bounds(low=0, high=86_400),
        ),
    )
}
"""The settings of the operator commands alone; the others are the relay's and the forwarder's."""

_FORWARDER_SETTINGS: dict[str, Setting] = {
    flag.name: _row(
        flag.name,
        flag.type,
        flag.default,
        flag.env,
        flag.flag.help,
        flag.flag if flag.flag.describe() else None,
        flag.flag.shown_default,
    )
    for flag in FORWARDER_FLAGS
}

_PUBLISHER_SHARDS = attrs.evolve(
    setting_named("shards"),
    help="Shard count; it must match the count recorded in Redis, and is recorded if none is.",
    shown_default=f"as recorded, else {DEFAULT_SHARDS}",
)


@attrs.frozen
class RedisTarget:
    """Where the queues live, from ``--redis-url`` and ``--redis-cluster``."""

    url: str
    cluster: bool

    def client(self) -> SyncRedisClient:
        return sync_client(self.url, cluster=self.cluster, timeout=DEFAULT_TIMEOUT)


def redis_options(func: F) -> F:
    """Add ``--redis-url`` / ``--redis-cluster`` and pass them on as ``redis: RedisTarget``."""

    @functools.wraps(func)
    def wrapper(*args: Any, redis_url: str, redis_cluster: bool, **kwargs: Any) -> Any:
        return func(*args, redis=RedisTarget(redis_url, redis_cluster), **kwargs)

    wrapper = _setting_option(setting_named("redis_cluster"))(wrapper)
    wrapper = _setting_option(setting_named("redis_url"))(wrapper)
    return wrapper  # type: ignore[return-value]


prefix_option = _setting_option(setting_named("prefix"))
json_option = _action(
    "--json", "as_json", is_flag=True, help="Print the result as JSON (errors stay on stderr)."
)


@click.group()
@click.version_option(package_name=PROGRAM, prog_name=PROGRAM)
def main() -> None:
    """Ordered, versioned asynchronous publishing to Centrifugo.

    Exit codes: 0 done, 1 the command failed, 2 bad usage, 3 a fatal relay error.
    """


# --- relay and config check ------------------------------------------------------------


def _relay_options(func: F) -> F:
    """``--config`` and a flag for every relay setting, in the order of the settings table."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            envvar=config.CONFIG_ENV,
            show_envvar=True,
            help="TOML configuration file.",
        ),
        *(
            click.option(_decls(setting), cls=_SettingOption, setting=setting)
            for setting in SETTINGS
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@_relay_options
@_friendly_errors
def relay(config_file: str | None, **flags: Any) -> None:
    """Move queued envelopes into Centrifugo, in order per key, until SIGTERM/SIGINT."""
    settings, origin = config.load_settings(config_file, os.environ, flags)
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets_of(settings.api_key, settings.redis_url, *settings.api_urls),
    )
    for flag in config.exposed_on_command_line(settings, origin):
        logging.getLogger("centrifugo_async.relay").warning(
            "a flag carries a secret every local user can read (ps): use the environment, "
            "the config file or --api-key-file instead",
            extra={"flag": flag},
        )
    tune_for_a_service()
    with _errors_as_log_lines(settings.log_format, "centrifugo_async.relay"):
        asyncio.run(_serve_until_signalled(settings))


async def _serve_until_signalled(settings: RelaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)


@main.group("config")
def config_group() -> None:
    """Inspect the relay configuration."""


@config_group.command("check")
@_relay_options
@json_option
@_friendly_errors
def config_check(config_file: str | None, as_json: bool, **flags: Any) -> None:
    """Validate the configuration and print the effective values (secrets masked)."""
    settings, origin = config.load_settings(config_file, os.environ, flags)
    warnings = [
        f"{flag} carries a secret every local user can read (ps)"
        for flag in config.exposed_on_command_line(settings, origin)
    ]
    if as_json:
        _echo_json(
            {"valid": True, "settings": config.effective(settings, origin), "warnings": warnings}
        )
    else:
        click.echo(config.describe(settings, origin), nl=False)
    for warning in warnings:
        click.echo(f"# warning: {warning}", err=True)
    click.echo("# configuration is valid", err=True)


# --- the operator commands -------------------------------------------------------------


def _keyspace(client: SyncRedisClient, prefix: str) -> Keyspace:
    return admin.recorded_keyspace(client, prefix)


@main.command()
@click.argument("channel")
@click.argument("data")
@_action("--key", required=True, help="Object key (routes the message to its shard).")
@_action(
    "--object-version",
    "version",
    type=click.IntRange(0, MAX_OBJECT_VERSION),
    shown_required=True,
    help="The object's version, e.g. its row version in your database.",
)
@_action(
    "--version",
    "legacy_version",
    type=click.IntRange(0, MAX_OBJECT_VERSION),
    hidden=True,
    help="Deprecated name of --object-version.",
)
@_action("--tag", "tags", multiple=True, metavar="NAME=VALUE", help="Centrifugo tag (repeatable).")
@_action(
    "--ttl-ms",
    type=click.IntRange(min=1),
    help="Drop the message instead of delivering it once it is older than this.",
)
@_action(
    "--idempotency-key",
    help="Centrifugo's idempotency key (default: derived from channel, key and version).",
)
@_setting_option(_PUBLISHER_SHARDS)
@redis_options
@prefix_option
@json_option
@_friendly_errors
def publish(
    channel: str,
    data: str,
    key: str,
    version: int | None,
    legacy_version: int | None,
    tags: tuple[str, ...],
    ttl_ms: int | None,
    idempotency_key: str | None,
    shards: int | None,
    redis: RedisTarget,
    prefix: str,
    as_json: bool,
) -> None:
    """Enqueue one message. DATA is JSON, e.g. '{"status": "paid"}'."""
    if legacy_version is not None:
        if version is not None:
            raise click.UsageError("give --object-version once (--version is its old name)")
        click.echo("warning: publish --version is deprecated: use --object-version", err=True)
        version = legacy_version
    if version is None:
        raise click.UsageError("Missing option '--object-version' (the object's version).")
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="DATA") from None
    tag_map = {}
    for tag in tags:
        name, sep, value = tag.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {tag!r}", param_hint="--tag")
        tag_map[name] = value
    client = redis.client()
    if shards is None:
        shards = topology.read_shards(client, prefix) or DEFAULT_SHARDS
    with Publisher(client, shards=shards, prefix=prefix, owns_client=True) as publisher:
        envelope = publisher.publish(
            channel,
            payload,
            key=key,
            version=version,
            tags=tag_map or None,
            idempotency_key=idempotency_key,
            ttl_ms=ttl_ms,
        )
    if as_json:
        _echo_json({"prefix": prefix, "envelope": json.loads(encode_envelope(envelope))})
        return
    click.echo(
        f"enqueued channel={channel} key={key} version={version} "
        f"shard={envelope.shard} seq={envelope.seq}"
    )


@main.command()
@redis_options
@prefix_option
@_setting_option(OPERATOR_SETTINGS["sample"])
@json_option
@_friendly_errors
def stats(redis: RedisTarget, prefix: str, sample: float, as_json: bool) -> None:
    """Per shard: backlog, lag, throughput, dead letters and the owning relay."""
    client = redis.client()
    keyspace = _keyspace(client, prefix)
    rows = admin.collect_stats(client, keyspace, sample_seconds=sample)
    relays = admin.relay_group(client, keyspace)
    if as_json:
        shards = [attrs.asdict(r) for r in rows]
        _echo_json({"relays": relays, "shards": shards})
        return
    click.echo(
        f"{'shard':>5} {'queued':>8} {'inflight':>8} {'lag':>7} {'msg/s':>8} {'dlq':>5} "
        f"{'delivered':>10} {'expired':>7} {'superseded':>10}  owner (epoch, held for, ttl left)"
    )
    for r in rows:
        lag = "-" if r.oldest_age_ms is None else _duration(r.oldest_age_ms)
        rate = "-" if r.delivered_per_s is None else f"{r.delivered_per_s:.0f}"
        owner = (
            f"{r.lease_owner} (#{r.lease_epoch}, {_duration(r.lease_age_ms or 0)}, "
            f"{_duration(r.lease_ttl_ms or 0)})"
            if r.lease_owner
            else "-"
        )
        click.echo(
            f"{r.shard:>5} {r.queued:>8} {r.in_flight:>8} {lag:>7} {rate:>8} {r.dead_letters:>5} "
            f"{r.delivered:>10} {r.expired:>7} {r.superseded:>10}  {owner}"
        )
    click.echo(
        f"total queued={sum(r.queued for r in rows)} "
        f"in_flight={sum(r.in_flight for r in rows)} "
        f"dead_letters={sum(r.dead_letters for r in rows)}"
        + (f" msg/s={sum(r.delivered_per_s or 0 for r in rows):.0f}" if sample else "")
    )
    owned = {relay: sum(r.lease_owner == relay for r in rows) for relay in relays}
    click.echo(
        f"relays ({len(relays)}): "
        + (", ".join(f"{relay} owns {count}" for relay, count in owned.items()) or "none")
    )


@main.command()
@redis_options
@prefix_option
@_action("--shards", type=click.IntRange(1, MAX_SHARDS), required=True, help="The new shard count.")
@_setting_option(OPERATOR_SETTINGS["timeout"])
@json_option
@_friendly_errors
def reshard(redis: RedisTarget, prefix: str, shards: int, timeout: float, as_json: bool) -> None:
    """Change the shard count safely: drain, seal each shard, switch.

    Stop the publishers first and keep a relay running; restart the publishers
    with the new count afterwards. Running relays switch by themselves.
    """
    client = redis.client()
    before = _keyspace(client, prefix).shards
    if before != shards:
        with Progress(f"draining {before} shards", every=1, first_line=True) as shown:

            def progress(pending: list[int]) -> None:
                line = f"... waiting for shards {pending} to drain"
                shown.update(before - len(pending), before, line)

            admin.reshard(client, prefix, shards, timeout=timeout, progress=progress)
    if as_json:
        _echo_json(
            {"prefix": prefix, "before": before, "after": shards, "changed": before != shards}
        )
    elif before == shards:
        click.echo(f"prefix {prefix!r} already has {before} shards: nothing to do")
    else:
        click.echo(f"resharded prefix {prefix!r}: {before} -> {shards} shards")


def _duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms / 60_000:.1f}m"


@main.group()
def dlq() -> None:
    """Inspect, replay or purge dead letters."""


filter_options = [
    _action("--channel", help="Only letters whose channel matches this glob, e.g. 'orders:*'."),
    _action("--error", help="Only letters whose reason, code or error contains this text."),
]


def _with_filters(func: F) -> F:
    for option in reversed(filter_options):
        func = option(func)
    return func


@dlq.command("list")
@redis_options
@prefix_option
@_with_filters
@_setting_option(OPERATOR_SETTINGS["limit"])
@_action("--json", "as_json", is_flag=True, help="One JSON record per line (JSON Lines).")
@_friendly_errors
def dlq_list(
    redis: RedisTarget,
    prefix: str,
    channel: str | None,
    error: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show dead letters, oldest first."""
    client = redis.client()
    shown = 0
    for entry in admin.iter_dead_letters(client, _keyspace(client, prefix)):
        if shown >= limit:
            click.echo("... (more; raise --limit)", err=True)
            break
        if not admin.matches(entry, channel, error):
            continue
        shown += 1
        if as_json:
            click.echo(entry.raw.decode("utf-8", "replace"))
        elif entry.letter is None:
            click.echo(f"shard={entry.shard} unreadable record: {entry.raw[:120]!r}")
        else:
            letter = entry.letter
            click.echo(
                f"shard={letter.shard} reason={letter.reason} code={letter.code} "
                f"channel={letter.channel} error={letter.error!r}"
            )
            click.echo(f"    payload={(letter.payload or letter.payload_b64 or '')[:200]}")
    if shown == 0:
        click.echo("no dead letters", err=as_json)


@dlq.command("replay")
@redis_options
@prefix_option
@_with_filters
@_action("--dry-run", is_flag=True, help="Count what would be replayed, change nothing.")
@json_option
@_friendly_errors
def dlq_replay(
    redis: RedisTarget,
    prefix: str,
    channel: str | None,
    error: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Enqueue dead letters again (fresh seq) and remove them from the dead-letter lists."""
    client = redis.client()
    verb = "would replay" if dry_run else "replayed"
    with Progress("checking dead letters" if dry_run else "replaying dead letters") as shown:

        def progress(report: admin.ReplayReport) -> None:
            line = (
                f"... {report.done} of {report.matched} dead letters: {verb} "
                f"{report.replayed}, {len(report.skipped)} not replayable"
            )
            shown.update(report.done, report.matched, line)

        report = admin.replay_dead_letters(
            client,
            _keyspace(client, prefix),
            channel=channel,
            error=error,
            dry_run=dry_run,
            progress=progress,
        )
    for line in report.skipped:
        click.echo(line, err=True)
    if as_json:
        _echo_json(
            {
                "dry_run": dry_run,
                "matched": report.matched,
                "replayed": report.replayed,
                "skipped": report.skipped,
            }
        )
        return
    click.echo(
        f"{verb} {report.replayed} of {report.matched} matching dead letters"
        f" ({len(report.skipped)} not replayable)"
    )


@dlq.command("purge")
@redis_options
@prefix_option
@_with_filters
@_action("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@_friendly_errors
def dlq_purge(
    redis: RedisTarget,
    prefix: str,
    channel: str | None,
    error: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters (all, or those matching the filters)."""
    if not yes:
        click.confirm("Delete the matching dead letters for good?", abort=True, err=True)
    client = redis.client()
    with Progress("purging dead letters") as shown:

        def progress(done: int, total: int) -> None:
            shown.update(done, total, f"... {done} of {total} dead letters looked at")

        removed = admin.purge_dead_letters(
            client, _keyspace(client, prefix), channel=channel, error=error, progress=progress
        )
    if as_json:
        _echo_json({"purged": removed})
    else:
        click.echo(f"purged {removed} dead letters")


# --- the transactional outbox (PostgreSQL) -------------------------------------------
# psycopg is imported inside the commands: the rest of the tool works without the
# `outbox` extra.


def _dsn_option(*, required: bool = True) -> Callable[[F], F]:
    return _setting_option(_FORWARDER_SETTINGS["dsn"], required=required)


dsn_option = _dsn_option()
table_option = _setting_option(_FORWARDER_SETTINGS["table"])


def _forwarder_options(func: F) -> F:
    """A flag for every forwarder setting but the DSN and table (given separately)."""
    rows = [row for name, row in _FORWARDER_SETTINGS.items() if name not in ("dsn", "table")]
    options = [
        *(_setting_option(row) for row in rows),
        _setting_option(setting_named("log_level")),
        _setting_option(setting_named("log_format")),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _postgres_errors(func: F) -> F:
    """Report PostgreSQL errors (and a missing psycopg) as one line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            import psycopg
        except ImportError:
            raise click.ClickException(
                "the outbox needs psycopg: pip install 'centrifugo-async[outbox]'"
            ) from None
        try:
            return func(*args, **kwargs)
        except psycopg.Error as exc:
            raise click.ClickException(f"PostgreSQL: {str(exc).strip()}") from None

    return _friendly_errors(wrapper)  # type: ignore[return-value]


def _dsn_password(dsn: str) -> list[str]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(dsn).get("password")
    except Exception:
        return []
    return [str(password)] if password else []


@main.group("outbox")
def outbox_group() -> None:
    """The transactional outbox: create its table, forward its rows, watch its backlog."""


@outbox_group.command("init")
@_dsn_option(required=False)
@table_option
@_action("--print", "print_only", is_flag=True, help="Print the SQL; change nothing.")
@json_option
@_postgres_errors
def outbox_init(dsn: str | None, table: str, print_only: bool, as_json: bool) -> None:
    """Create the outbox table, its index, trigger and version table (idempotent).

    With --print, the SQL is shown instead, for teams that run migrations themselves
    (then --dsn is not needed).
    """
    from .outbox import SCHEMA_VERSION, OutboxTable, init_schema, schema_sql

    outbox_table = OutboxTable(table)
    if print_only:
        if as_json:
            raise click.UsageError("--print shows SQL: it does not go with --json")
        click.echo(schema_sql(outbox_table), nl=False)
        return
    if not dsn:
        raise click.UsageError(f"Missing option '--dsn' (env var: '{DSN_ENV}').")
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        created = init_schema(conn, outbox_table)
    if as_json:
        _echo_json({"table": table, "schema_version": SCHEMA_VERSION, "created": created})
        return
    state = "created" if created else "already there, checked"
    click.echo(f"outbox table {table!r}: schema version {SCHEMA_VERSION} {state}")


@outbox_group.command("forward")
@dsn_option
@redis_options
@prefix_option
@table_option
@_forwarder_options
@_postgres_errors
def outbox_forward(
    dsn: str,
    redis: RedisTarget,
    prefix: str,
    table: str,
    log_level: str,
    log_format: str,
    **flags: Any,
) -> None:
    """Move committed outbox rows into the shard lists, until SIGTERM/SIGINT."""
    from .outbox.forwarder import forward
    from .outbox.settings import ForwarderSettings

    settings = ForwarderSettings(
        dsn=dsn,
        redis_url=redis.url,
        redis_cluster=redis.cluster,
        prefix=prefix,
        table=table,
        **{name: value for name, value in flags.items() if value is not None},
    )
    configure_logging(log_level, log_format, [*secrets_of("", redis.url)[1:], *_dsn_password(dsn)])

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await forward(settings, stop=stop)

    tune_for_a_service()
    with _errors_as_log_lines(log_format, "centrifugo_async.outbox"):
        asyncio.run(run())


@outbox_group.command("stats")
@dsn_option
@table_option
@json_option
@_postgres_errors
def outbox_stats(dsn: str, table: str, as_json: bool) -> None:
    """Per lane: rows waiting in the outbox, the oldest row's age, the owning forwarder."""
    import psycopg

    from .outbox import OutboxTable, check_schema
    from .outbox.stats import lane_backlog

    outbox_table = OutboxTable(table)
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        check_schema(conn, outbox_table)
        lanes = lane_backlog(conn, outbox_table)
    total = sum(lane.rows for lane in lanes)
    oldest = max((lane.oldest_age_ms or 0 for lane in lanes), default=0)
    if as_json:
        body = {"rows": total, "oldest_age_ms": oldest, "lanes": [attrs.asdict(x) for x in lanes]}
        _echo_json(body)
        return
    click.echo(f"{'lane':>5} {'rows':>9} {'oldest':>8}  owner")
    for lane in lanes:
        age = "-" if lane.oldest_age_ms is None else _duration(lane.oldest_age_ms)
        click.echo(f"{lane.lane:>5} {lane.rows:>9} {age:>8}  {lane.owner or '-'}")
    owners = sorted({lane.owner for lane in lanes if lane.owner})
    click.echo(
        f"total rows={total} oldest={_duration(oldest) if total else '-'} "
        f"forwarders ({len(owners)}): {', '.join(owners) or 'none'}"
    )
