"""``centrifugo-async``: the relay service and the operator's tools.

Each command is a thin shell: it parses flags, calls the library and turns the
library's typed errors into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click
import redis.exceptions

from . import admin
from .connection import SyncRedisClient, sync_client
from .exceptions import CentrifugoAsyncError, RelayFatalError
from .logs import configure_logging, secrets_of
from .protocol import topology
from .protocol.keys import DEFAULT_PREFIX, Keyspace
from .publisher import Publisher
from .relay import config
from .relay.service import serve
from .relay.settings import RelaySettings

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


def redis_options(func: F) -> F:
    """Add ``--redis-url`` / ``--redis-cluster`` and pass them on as ``redis: RedisTarget``."""

    @functools.wraps(func)
    def wrapper(*args: Any, redis_url: str, redis_cluster: bool, **kwargs: Any) -> Any:
        return func(*args, redis=RedisTarget(redis_url, redis_cluster), **kwargs)

    wrapper = click.option(
        "--redis-cluster",
        is_flag=True,
        envvar="CENTRIFUGO_ASYNC_REDIS_CLUSTER",
        help="The Redis URL is a node of a Redis Cluster [env: CENTRIFUGO_ASYNC_REDIS_CLUSTER].",
    )(wrapper)
    wrapper = click.option(
        "--redis-url",
        envvar="CENTRIFUGO_ASYNC_REDIS_URL",
        default="redis://127.0.0.1:6379/0",
        show_default=True,
        help="Redis holding the queues [env: CENTRIFUGO_ASYNC_REDIS_URL].",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


prefix_option = click.option(
    "--prefix",
    envvar="CENTRIFUGO_ASYNC_PREFIX",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="Key prefix of the queues [env: CENTRIFUGO_ASYNC_PREFIX].",
)


@click.group()
@click.version_option(package_name="centrifugo-async")
def main() -> None:
    """Ordered, versioned asynchronous publishing to Centrifugo."""


def _relay_options(func: F) -> F:
    """Flags of the relay's settings. None means "not given": file, env or default decide."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            envvar="CENTRIFUGO_ASYNC_CONFIG",
            help="TOML configuration file [env: CENTRIFUGO_ASYNC_CONFIG].",
        ),
        click.option(
            "--redis-url", help="Redis holding the queues [env: CENTRIFUGO_ASYNC_REDIS_URL]."
        ),
        click.option(
            "--redis-cluster/--no-redis-cluster",
            default=None,
            help="The Redis URL is a Redis Cluster node [env: CENTRIFUGO_ASYNC_REDIS_CLUSTER].",
        ),
        click.option("--prefix", help="Key prefix of the queues [env: CENTRIFUGO_ASYNC_PREFIX]."),
        click.option("--api-url", help="Centrifugo server API prefix [env: CENTRIFUGO_API_URL]."),
        click.option("--api-key", help="Centrifugo http_api.key [env: CENTRIFUGO_API_KEY]."),
        click.option("--shards", type=int, help="Shard count (default: as recorded)."),
        click.option("--max-batch", type=int, help="Commands per /api/batch (default 500)."),
        click.option("--lease-ttl", type=float, help="Seconds a lease lasts unrenewed (10)."),
        click.option("--request-timeout", type=float, help="Centrifugo request timeout (5)."),
        click.option(
            "--late-delivery",
            help="Drop rules, e.g. 'typing:*=2s,orders:*=never' [env: ..._LATE_DELIVERY].",
        ),
        click.option(
            "--forward-version",
            help="Channel patterns that get Centrifugo's version field, comma-separated.",
        ),
        click.option("--metrics-host", help="Bind address of /metrics and /health (127.0.0.1)."),
        click.option(
            "--metrics-port", type=int, help="Port of /metrics and /health; 0: off (9108)."
        ),
        click.option("--stuck-after", type=float, help="Seconds of lag /health calls stuck (60)."),
        click.option("--log-format", type=click.Choice(["console", "json"])),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"])),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings_from(
    config_file: str | None, flags: dict[str, Any]
) -> tuple[RelaySettings, dict[str, str]]:
    parsed = dict(flags)
    if parsed.get("late_delivery") is not None:
        parsed["late_delivery"] = _parse_flag(config.SOURCES, "late_delivery", parsed)
    if parsed.get("forward_version") is not None:
        parsed["forward_version"] = _parse_flag(config.SOURCES, "forward_version", parsed)
    return config.load_settings(config_file, os.environ, parsed)


def _parse_flag(sources: tuple[config.Source, ...], field: str, flags: dict[str, Any]) -> Any:
    source = next(s for s in sources if s.field == field)
    try:
        return source.parse(flags[field])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--" + field.replace("_", "-")) from None


@main.command()
@_relay_options
@_friendly_errors
def relay(config_file: str | None, **flags: Any) -> None:
    """Move queued envelopes into Centrifugo, in order per key, until SIGTERM/SIGINT."""
    settings, _ = _settings_from(config_file, flags)
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets_of(settings.api_key, settings.redis_url),
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
    settings, origin = _settings_from(config_file, flags)
    click.echo(config.describe(settings, origin), nl=False)
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
