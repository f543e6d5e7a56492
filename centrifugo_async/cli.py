"""``centrifugo-async``: the relay service and the operator's tools.

Each command is a thin shell: it parses flags, calls the library and turns the
library's typed errors into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import click
import redis.exceptions

from . import admin
from .connection import SyncRedisClient, sync_client
from .exceptions import CentrifugoAsyncError, RelayFatalError
from .logs import configure_logging, secrets_of
from .protocol import topology
from .protocol.keys import Keyspace
from .publisher import Publisher
from .relay import config
from .relay.service import serve
from .relay.settings import SETTINGS, OneOf, RelaySettings, Setting, setting_named

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_FATAL = 2


def _friendly_errors(func: F) -> F:
    """Report library and Redis errors as one line, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RelayFatalError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FATAL)
        except (CentrifugoAsyncError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        except redis.exceptions.RedisError as exc:
            raise click.ClickException(f"Redis is unavailable: {exc}") from None

    return wrapper  # type: ignore[return-value]


@attrs.frozen
class RedisTarget:
    """Where the queues live, from ``--redis-url`` and ``--redis-cluster``."""

    url: str
    cluster: bool

    def client(self) -> SyncRedisClient:
        return sync_client(self.url, cluster=self.cluster)


def _shared_option(name: str, **kwargs: Any) -> Callable[[F], F]:
    """An operator command's flag for a relay setting, read by click with its default and env var.

    Name, environment variable, default and help come from the settings table,
    so ``stats`` and ``relay`` cannot disagree about them.
    """
    setting = setting_named(name)
    return click.option(
        setting.flag,
        envvar=setting.env,
        show_envvar=True,
        default=setting.default,
        show_default=True,
        help=setting.help,
        **kwargs,
    )


def redis_options(func: F) -> F:
    """Add ``--redis-url`` / ``--redis-cluster`` and pass them on as ``redis: RedisTarget``."""

    @functools.wraps(func)
    def wrapper(*args: Any, redis_url: str, redis_cluster: bool, **kwargs: Any) -> Any:
        return func(*args, redis=RedisTarget(redis_url, redis_cluster), **kwargs)

    wrapper = _shared_option("redis_cluster", is_flag=True)(wrapper)
    wrapper = _shared_option("redis_url")(wrapper)
    return wrapper  # type: ignore[return-value]


prefix_option = _shared_option("prefix")


@click.group()
@click.version_option(package_name="centrifugo-async")
def main() -> None:
    """Ordered, versioned asynchronous publishing to Centrifugo."""


class _SettingOption(click.Option):
    """The flag of one relay setting, derived from its row in the settings table.

    It has no click default (None means "not given") and names the setting's
    environment variable in ``--help`` without reading it: ``config.load_settings``
    reads the environment itself, to keep flags > environment > file and to say
    where each value came from.
    """

    def __init__(self, param_decls: Sequence[str], *, setting: Setting, **kwargs: Any) -> None:
        self.setting = setting
        if isinstance(setting.check, OneOf):
            kwargs["type"] = click.Choice(
                setting.check.choices, case_sensitive=not setting.check.ignore_case
            )
        elif setting.type is not bool:
            kwargs.update(metavar=config.kind_of(setting).metavar, callback=self._parse)
        super().__init__(
            param_decls,
            default=None,
            envvar=setting.env,
            show_envvar=True,
            help=setting.help,
            **kwargs,
        )

    def _parse(self, ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        """The flag's text parsed as the setting's TOML and environment values are."""
        if value is None:
            return None
        try:
            return config.parse_value(self.setting, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        return None

    def get_error_hint(self, ctx: click.Context | None) -> str:
        """Only the flag: a bad flag value did not come from the environment variable."""
        return click.Parameter.get_error_hint(self, ctx)

    def get_help_extra(self, ctx: click.Context) -> click.types.OptionHelpExtra:
        extra = super().get_help_extra(ctx)
        if self.setting.required:
            extra["required"] = "required"
        else:
            extra["default"] = self.setting.shown_default
        if self.setting.check is not None and not isinstance(self.setting.check, OneOf):
            extra["range"] = self.setting.check.describe()
        return extra


def _setting_option(setting: Setting) -> Callable[[F], F]:
    on_off = f"{setting.flag}/--no-{setting.name.replace('_', '-')}"
    flag = on_off if setting.type is bool else setting.flag
    return click.option(flag, cls=_SettingOption, setting=setting)


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
        *(_setting_option(setting) for setting in SETTINGS),
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
        secrets_of(settings.api_key, settings.redis_url, settings.api_url),
    )
    for flag in config.exposed_on_command_line(settings, origin):
        logging.getLogger("centrifugo_async.relay").warning(
            "%s carries a secret every local user can read (ps): use the environment, "
            "the config file or --api-key-file instead",
            flag,
        )
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
@_friendly_errors
def config_check(config_file: str | None, **flags: Any) -> None:
    """Validate the configuration and print the effective values (secrets masked)."""
    settings, origin = config.load_settings(config_file, os.environ, flags)
    click.echo(config.describe(settings, origin), nl=False)
    for flag in config.exposed_on_command_line(settings, origin):
        click.echo(f"# warning: {flag} carries a secret every local user can read (ps)", err=True)
    click.echo("# configuration is valid", err=True)


def _keyspace(client: SyncRedisClient, prefix: str) -> Keyspace:
    return admin.recorded_keyspace(client, prefix)


@main.command()
@click.argument("channel")
@click.argument("data")
@click.option("--key", required=True, help="Object key (routes the message to its shard).")
@click.option(
    "--version",
    "version",
    required=True,
    type=click.IntRange(0, 2**53 - 1),
    help="Object version, e.g. the row version in your database.",
)
@click.option(
    "--tag", "tags", multiple=True, metavar="NAME=VALUE", help="Centrifugo tag (repeatable)."
)
@click.option("--ttl-ms", type=click.IntRange(min=1), help="Drop instead of delivering when older.")
@click.option("--idempotency-key")
@click.option(
    "--shards", type=click.IntRange(1, 4096), help="Shard count (default: as recorded, else 16)."
)
@redis_options
@prefix_option
@_friendly_errors
def publish(
    channel: str,
    data: str,
    key: str,
    version: int,
    tags: tuple[str, ...],
    ttl_ms: int | None,
    idempotency_key: str | None,
    shards: int | None,
    redis: RedisTarget,
    prefix: str,
) -> None:
    """Enqueue one message. DATA is JSON, e.g. '{"status": "paid"}'."""
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
        shards = topology.read_shards(client, prefix) or 16
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
    click.echo(
        f"enqueued channel={channel} key={key} version={version} "
        f"shard={envelope.shard} seq={envelope.seq}"
    )


@main.command()
@redis_options
@prefix_option
@click.option(
    "--sample",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds to sample the delivery rate over (0: no rate).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_friendly_errors
def stats(redis: RedisTarget, prefix: str, sample: float, as_json: bool) -> None:
    """Per shard: backlog, lag, throughput, dead letters and the owning relay."""
    client = redis.client()
    keyspace = _keyspace(client, prefix)
    rows = admin.collect_stats(client, keyspace, sample_seconds=sample)
    relays = admin.relay_group(client, keyspace)
    if as_json:
        shards = [attrs.asdict(r) for r in rows]
        click.echo(json.dumps({"relays": relays, "shards": shards}, indent=2))
        return
    click.echo(
        f"{'shard':>5} {'queued':>8} {'inflight':>8} {'lag':>7} {'msg/s':>8} {'dlq':>5} "
        f"{'delivered':>10} {'expired':>7}  owner (epoch, held for, ttl left)"
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
            f"{r.delivered:>10} {r.expired:>7}  {owner}"
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
@click.option("--shards", type=click.IntRange(1, 4096), required=True, help="The new shard count.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the shards to drain before giving up (changing nothing).",
)
@_friendly_errors
def reshard(redis: RedisTarget, prefix: str, shards: int, timeout: float) -> None:
    """Change the shard count safely: drain, seal each shard, switch.

    Stop the publishers first and keep a relay running; restart the publishers
    with the new count afterwards. Running relays switch by themselves.
    """
    client = redis.client()

    def progress(pending: list[int]) -> None:
        click.echo(f"... waiting for shards {pending} to drain", err=True)

    before = _keyspace(client, prefix).shards
    after = admin.reshard(client, prefix, shards, timeout=timeout, progress=progress)
    if before == after.shards:
        click.echo(f"prefix {prefix!r} already has {before} shards: nothing to do")
    else:
        click.echo(f"resharded prefix {prefix!r}: {before} -> {after.shards} shards")


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
    click.option(
        "--channel", help="Only letters whose channel matches this glob, e.g. 'orders:*'."
    ),
    click.option("--error", help="Only letters whose reason, code or error contains this text."),
]


def _with_filters(func: F) -> F:
    for option in reversed(filter_options):
        func = option(func)
    return func


@dlq.command("list")
@redis_options
@prefix_option
@_with_filters
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
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
        click.echo("no dead letters")


@dlq.command("replay")
@redis_options
@prefix_option
@_with_filters
@click.option("--dry-run", is_flag=True, help="Count what would be replayed, change nothing.")
@_friendly_errors
def dlq_replay(
    redis: RedisTarget, prefix: str, channel: str | None, error: str | None, dry_run: bool
) -> None:
    """Enqueue dead letters again (fresh seq) and remove them from the dead-letter lists."""
    client = redis.client()

    def progress(report: admin.ReplayReport) -> None:
        if report.replayed % 1000 == 0:
            click.echo(f"... {report.replayed} replayed", err=True)

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
    verb = "would replay" if dry_run else "replayed"
    click.echo(
        f"{verb} {report.replayed} of {report.matched} matching dead letters"
        f" ({len(report.skipped)} not replayable)"
    )


@dlq.command("purge")
@redis_options
@prefix_option
@_with_filters
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_friendly_errors
def dlq_purge(
    redis: RedisTarget, prefix: str, channel: str | None, error: str | None, yes: bool
) -> None:
    """Delete dead letters (all, or those matching the filters)."""
    if not yes:
        click.confirm("Delete the matching dead letters for good?", abort=True)
    client = redis.client()
    removed = admin.purge_dead_letters(
        client, _keyspace(client, prefix), channel=channel, error=error
    )
    click.echo(f"purged {removed} dead letters")


# --- the transactional outbox (PostgreSQL) -------------------------------------------
# psycopg is imported inside the commands: the rest of the tool works without the
# `outbox` extra.

_DSN_ENV = "CENTRIFUGO_ASYNC_OUTBOX_DSN"


def _dsn_option(*, required: bool = True) -> Callable[[F], F]:
    return click.option(
        "--dsn",
        envvar=_DSN_ENV,
        show_envvar=True,
        required=required,
        help="PostgreSQL connection string of the database holding the outbox.",
    )


dsn_option = _dsn_option()
table_option = click.option(
    "--table",
    default="centrifugo_outbox",
    show_default=True,
    help="The outbox table, optionally schema-qualified (app.centrifugo_outbox).",
)


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
@click.option("--print", "print_only", is_flag=True, help="Print the SQL; change nothing.")
@_postgres_errors
def outbox_init(dsn: str | None, table: str, print_only: bool) -> None:
    """Create the outbox table, its index, trigger and version table (idempotent).

    With --print, the SQL is shown instead, for teams that run migrations themselves
    (then --dsn is not needed).
    """
    from .outbox import OutboxTable, init_schema, schema_sql

    outbox_table = OutboxTable(table)
    if print_only:
        click.echo(schema_sql(outbox_table), nl=False)
        return
    if not dsn:
        raise click.UsageError(f"Missing option '--dsn' (env var: '{_DSN_ENV}').")
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        created = init_schema(conn, outbox_table)
    state = "created" if created else "already there, checked"
    click.echo(f"outbox table {table!r}: schema version 1 {state}")


@outbox_group.command("forward")
@dsn_option
@redis_options
@prefix_option
@table_option
@click.option(
    "--shards",
    type=click.IntRange(1, 4096),
    help="Shard count to record if Redis records none (default: as recorded, else 16).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Most rows taken from one lane per sweep.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Seconds between sweeps when no NOTIFY arrives.",
)
@click.option(
    "--claim-interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between looks for free lanes (a stopped forwarder's, new ones).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9109,
    show_default=True,
    help="Port of /metrics and /health; 0 disables them.",
)
@click.option("--forwarder-id", help="Name in logs and `outbox stats` (default host:pid:random).")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True
)
@_postgres_errors
def outbox_forward(
    dsn: str,
    redis: RedisTarget,
    prefix: str,
    table: str,
    shards: int | None,
    batch: int,
    poll_interval: float,
    claim_interval: float,
    metrics_host: str,
    metrics_port: int,
    forwarder_id: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Move committed outbox rows into the shard lists, until SIGTERM/SIGINT."""
    from .outbox.forwarder import forward
    from .outbox.settings import ForwarderSettings

    options: dict[str, Any] = {"forwarder_id": forwarder_id} if forwarder_id else {}
    settings = ForwarderSettings(
        dsn=dsn,
        redis_url=redis.url,
        redis_cluster=redis.cluster,
        prefix=prefix,
        table=table,
        shards=shards,
        batch=batch,
        poll_interval=poll_interval,
        claim_interval=claim_interval,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        **options,
    )
    configure_logging(log_level, log_format, [*secrets_of("", redis.url)[1:], *_dsn_password(dsn)])

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await forward(settings, stop=stop)

    asyncio.run(run())


@outbox_group.command("stats")
@dsn_option
@table_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
        click.echo(json.dumps(body, indent=2))
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
