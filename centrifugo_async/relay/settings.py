"""``RelaySettings``: everything the relay is configured with, validated up front.

The class body is the one table of relay settings. Each field declares, and
only there, its type (the annotation), default, bounds, TOML key, environment
variable and help text; ``SETTINGS`` is that table as values. The TOML file,
the environment, the command-line flags (``centrifugo-async relay --help``),
``config check`` and the documentation are all derived from it, so a setting is
written down once and its sources cannot drift apart.

A value out of bounds raises ``InvalidSetting``, which names the setting in its
``field`` attribute: ``config.load_settings`` adds where the value came from
without having to guess the setting from the message.

Every duration has a range that makes sense for it, not only a sign: a lease
of a tenth of a millisecond renews thousands of times a second, a retry delay
of a week never retries. URLs must name a host (or, for ``unix://``, a socket
path), and a URL's password is masked in every message and ``repr``.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs

from ..exceptions import InvalidSetting
from ..logs import mask_url
from ..protocol.keys import DEFAULT_PREFIX, prefix_problem
from ..protocol.routing import MAX_SHARDS
from ..tracing import INSTALL_HINT, opentelemetry_missing
from .freshness import DEFAULT_FRESHNESS, Freshness

__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "URL_SEPARATOR",
    "Bounds",
    "ChannelRules",
    "Check",
    "Freshness",
    "FreshnessRule",
    "Host",
    "InvalidSetting",
    "LatePolicy",
    "OneOf",
    "Prefix",
    "RelaySettings",
    "Schemes",
    "Setting",
    "UrlList",
    "setting_named",
    "split_urls",
]

ENV_PREFIX = "CENTRIFUGO_ASYNC_"
"""A setting's environment variable is this plus its name in capitals, unless it says otherwise."""


class Check(Protocol):
    """What a setting's value must satisfy, and how to say so in help texts."""

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (completing "<setting> ..."), or None if it is fine."""

    def describe(self) -> str:
        """The allowed values in a few words, for ``--help`` and the docs."""


@attrs.frozen
class Bounds:
    """Numeric limits: ``above < value`` and ``low <= value <= high``; floats must be finite.

    A float that is nan or infinite is refused whatever the limits: no duration
    is meaningful as either. An absent optional value (None) is always allowed.
    """

    above: float | None = None
    low: float | None = None
    high: float | None = None
    zero_unsets: bool = False
    """0 stands for None (not set), as flags, env and TOML write an unset count."""

    def problem(self, value: Any) -> str | None:
        if value is None or (self.zero_unsets and value == 0):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.above is not None and value <= self.above:
            return f"must be > {self.above}, got {value!r}"
        too_low = self.low is not None and value < self.low
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            return f"must be {self._range()}, got {value!r}"
        return None

    def describe(self) -> str:
        """Like click's ranges: ``x>0``, ``1<=x<=4096``, ``0<x<=4000``."""
        if self.above is not None:
            lower, one_sided = f"{self.above}<", f"x>{self.above}"
        elif self.low is not None:
            lower, one_sided = f"{self.low}<=", f"x>={self.low}"
        else:
            lower, one_sided = "", ""
        described = one_sided if self.high is None else f"{lower}x<={self.high}"
        return f"0 or {described}" if self.zero_unsets else described

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            described = f"{self.low}..{self.high}"
        else:
            described = f">= {self.low}" if self.low is not None else f"<= {self.high}"
        return f"0 or {described}" if self.zero_unsets else described


@attrs.frozen
class OneOf:
    """One of a few words (``ignore_case``: in any case, e.g. ``INFO``)."""

    choices: tuple[str, ...]
    ignore_case: bool = False

    def problem(self, value: Any) -> str | None:
        word = value.lower() if self.ignore_case and isinstance(value, str) else value
        return None if word in self.choices else f"must be {self.describe()}, got {value!r}"

    def describe(self) -> str:
        quoted = [f"'{choice}'" for choice in self.choices]
        return ", ".join(quoted[:-1]) + " or " + quoted[-1]


@attrs.frozen
class Schemes:
    """A URL with one of these schemes and a host (``unix://``: a socket path).

    It may carry a password, which is masked wherever the URL is shown.
    """

    prefixes: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.startswith(self.prefixes):
            shown = mask_url(value) if isinstance(value, str) else value
            return f"must start with one of {self.prefixes}, got {shown!r}"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 -- parsing it is the check
        except ValueError as exc:
            return f"is not a valid URL ({exc}), got {mask_url(value)!r}"
        if parts.scheme == "unix":
            if not parts.path:
                return (
                    f"must name a socket path (unix:///path/to/redis.sock), got {mask_url(value)!r}"
                )
        elif not parts.hostname:
            return f"must name a host, got {mask_url(value)!r}"
        return None

    def describe(self) -> str:
        schemes = ", ".join(self.prefixes[:-1]) + " or " + self.prefixes[-1]
        socket = " (unix://: a socket path)" if "unix://" in self.prefixes else ""
        return f"{schemes} URL with a host{socket}"

    def mask(self, value: str) -> str:
        """``value`` as it may be shown: its passwords masked."""
        return mask_url(value)


URL_SEPARATOR = ","
"""Separates the URLs of a list setting (``api_url``) in its one string."""


def split_urls(value: str) -> tuple[str, ...]:
    """The URLs of a list setting's value, as written (items stripped, empty ones kept)."""
    return tuple(url.strip() for url in value.split(URL_SEPARATOR))


@attrs.frozen
class UrlList(Schemes):
    """One or more URLs, comma-separated (TOML: a list; flag: repeatable), each a ``Schemes``
    URL, none twice.

    The value stays one string so a single URL reads, compares and prints as it
    always did; ``split_urls`` gives the list. A URL never needs a comma here
    (an API prefix has none), so the separator cannot be ambiguous.
    """

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return f"must name at least one URL, got {value!r}"
        urls = split_urls(value)
        seen: set[str] = set()
        for position, url in enumerate(urls, 1):
            if not url:
                return (
                    f"has an empty URL (item {position} of {len(urls)}), got {self.mask(value)!r}"
                )
            problem = super().problem(url)
            if problem is not None:
                return problem if len(urls) == 1 else f"item {position}: {problem}"
            same = url.rstrip("/").lower()
            if same in seen:
                return f"names {mask_url(url)!r} twice"
            seen.add(same)
        return None

    def describe(self) -> str:
        return "one or more " + super().describe().replace("URL", "URLs") + ", comma-separated"

    def mask(self, value: str) -> str:
        return URL_SEPARATOR.join(mask_url(url) for url in split_urls(value))


@attrs.frozen
class Host:
    """A host name or IP address to bind to: never empty (which would mean every address)."""

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or not value or value != value.strip() or " " in value:
            return (
                f"must be a host name or IP address, got {value!r} (write 0.0.0.0 "
                "to listen on every address)"
            )
        return None

    def describe(self) -> str:
        return "host name or IP address"


@attrs.frozen
class Prefix:
    """A key prefix: what ``Keyspace`` accepts, refused at start-up rather than in a worker."""

    def problem(self, value: Any) -> str | None:
        problem = prefix_problem(value) if isinstance(value, str) else "must be a string"
        return None if problem is None else f"{problem}, got {value!r}"

    def describe(self) -> str:
        return "no braces or surrounding spaces"


@attrs.frozen
class LatePolicy:
    """Late-delivery rule for channels matching ``pattern`` (a glob like ``typing:*``).

    ``max_age_ms=None`` means never drop. An envelope's own ``ttl_ms`` wins over
    any policy; without one, the first matching policy decides.
    """

    pattern: str
    max_age_ms: int | None


@attrs.frozen
class _ValidPolicies:
    """Late-delivery rules with a pattern each and a positive age (or none: never drop)."""

    def problem(self, value: tuple[LatePolicy, ...]) -> str | None:
        for policy in value:
            if not policy.pattern:
                return "has an empty channel pattern"
            if policy.max_age_ms is not None and policy.max_age_ms < 1:
                return (
                    f"for {policy.pattern!r} must be a positive duration or 'never', "
                    f"got {policy.max_age_ms} ms"
                )
        return None

    def describe(self) -> str:
        return "ages like 500ms, 2s, 1.5m, 1h or never"


@attrs.frozen
class FreshnessRule:
    """Freshness mode of the channels matching ``pattern`` (a glob like ``cursor:*``).

    The first matching rule decides; a channel matching none is ``monotonic``
    (``freshness.DEFAULT_FRESHNESS``). See ``relay.freshness`` for the modes.
    """

    pattern: str
    mode: Freshness


@attrs.frozen
class _ValidFreshness:
    """Freshness rules with a pattern each."""

    def problem(self, value: tuple[FreshnessRule, ...]) -> str | None:
        for rule in value:
            if not rule.pattern:
                return "has an empty channel pattern"
        return None

    def describe(self) -> str:
        return "all, monotonic or latest"


@attrs.frozen
class Setting:
    """One row of the settings table: a ``RelaySettings`` field and how it is spelled everywhere."""

    name: str
    type: object
    """The field's annotation, resolved: ``int``, ``float``, ``int | None``, ..."""
    default: Any
    """The default value; None when it is computed per process (see ``shown_default``)."""
    toml: str
    """Key in the TOML file, ``section.key``, or a section name for a whole-table setting."""
    env: str
    help: str
    check: Check | None
    secret: bool
    """Masked wherever it is shown (``config check``, ``repr``)."""
    required: bool
    """The default (empty) is not allowed: the operator must give a value."""
    missing: str
    """How to give a required value, for the error when it is missing."""
    shown_default: str
    """How ``--help`` and the docs show the default."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def problem(self, value: Any) -> str | None:
        if self.required and not value:
            how = self.missing or f"pass {self.flag} or set {self.env}"
            return f"is empty: {how} ({self.help.split('. ')[0].rstrip('.')})"
        return None if self.check is None else self.check.problem(value)


_ROW = "centrifugo_async.setting"
"""The attrs metadata key of a field's row, completed with its name, type and default."""


def _setting(
    default: object = attrs.NOTHING,
    *,
    toml: str,
    help: str,
    factory: Callable[[], object] | None = None,
    check: Check | None = None,
    env: str = "",
    secret: bool = False,
    required: bool = False,
    missing: str = "",
    shown_default: str = "",
    converter: Callable[[Any], Any] | None = None,
) -> Any:
    """A ``RelaySettings`` field that is also a row of the settings table."""
    row = Setting("", None, None, toml, env, help, check, secret, required, missing, shown_default)
    shown: Callable[[Any], str] | bool = True
    if secret:
        shown = _masked
    elif isinstance(check, Schemes):
        shown = functools.partial(_masked_url, check)
    return attrs.field(
        default=default,
        factory=factory,
        validator=_validate,
        converter=converter,
        repr=shown,
        metadata={_ROW: row},
    )


def _masked(_: object) -> str:
    return "'***'"


def _masked_url(check: Schemes, url: object) -> str:
    return repr(check.mask(url)) if isinstance(url, str) else repr(url)


def _validate(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = setting_named(attribute.name).problem(value)
    if problem is not None:
        raise InvalidSetting(attribute.name, f"{attribute.name} {problem}")


def _default_relay_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


_POSITIVE = Bounds(above=0)


@attrs.frozen
class _OpenTelemetryInstalled:
    """On only where the OpenTelemetry API can be imported."""

    def problem(self, value: Any) -> str | None:
        if value and opentelemetry_missing():
            return f"needs OpenTelemetry: {INSTALL_HINT}"
        return None

    def describe(self) -> str:
        return "needs the otel extra"


def _zero_as_unset(value: int | None) -> int | None:
    return None if value == 0 else value


@attrs.frozen(kw_only=True)
class RelaySettings:
    """Relay configuration. Durations are in seconds.

    Each field is a row of the settings table (see the module docstring); its
    ``help`` says what it is for, and the operations guide lists them all.
    ``shards=None`` (or 0) adopts the count recorded in Redis by the publishers (waiting
    for the first one if nothing is recorded yet); an explicit count must match
    the recorded one, or is recorded when there is none.
    """

    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0",
        toml="redis.url",
        check=Schemes(("redis://", "rediss://", "unix://")),
        help="Redis holding the queues.",
    )
    redis_cluster: bool = _setting(
        False,
        toml="redis.cluster",
        help="The Redis URL is one node of a Redis Cluster.",
    )
    prefix: str = _setting(
        DEFAULT_PREFIX,
        toml="redis.prefix",
        check=Prefix(),
        help="Key prefix of the queues, the same as the publishers'.",
    )
    api_url: str = _setting(
        "http://127.0.0.1:8000/api",
        toml="centrifugo.api_url",
        env="CENTRIFUGO_API_URL",
        check=UrlList(("http://", "https://")),
        help="Centrifugo's server API prefix; the relay posts to its /batch endpoint. "
        "Several (a TOML list, or the flag repeated): Centrifugo nodes sharing one Redis "
        "or Nats engine; each shard posts to one node at a time, moving to the next on a "
        "network error or HTTP 5xx.",
    )
    api_key: str = _setting(
        "",
        toml="centrifugo.api_key",
        env="CENTRIFUGO_API_KEY",
        secret=True,
        required=True,
        missing="set CENTRIFUGO_API_KEY or pass --api-key-file",
        help="Centrifugo's http_api.key. Prefer the environment variable or api_key_file: "
        "a flag's value is visible to every local user (ps).",
    )
    api_key_file: str = _setting(
        "",
        toml="centrifugo.api_key_file",
        env="CENTRIFUGO_API_KEY_FILE",
        shown_default="none",
        help="File holding Centrifugo's http_api.key (read at start-up, surrounding "
        "whitespace ignored), instead of api_key.",
    )
    request_timeout: float = _setting(
        5.0,
        toml="centrifugo.request_timeout",
        check=Bounds(low=0.1, high=300),
        help="Seconds one /api/batch request may take; a timed-out batch is retried.",
    )
    forward_version: tuple[str, ...] = _setting(
        (),
        toml="centrifugo.forward_version",
        converter=tuple,
        help="Channel patterns whose publications carry the envelope version as "
        "Centrifugo's version, so Centrifugo skips stale ones (single-object channels only).",
    )
    relay_id: str = _setting(
        factory=_default_relay_id,
        toml="relay.id",
        shown_default="<hostname>:<pid>:<random>",
        help="This relay's id in the relay group and in its leases; unique per live relay.",
    )
    shards: int | None = _setting(
        None,
        toml="relay.shards",
        check=Bounds(low=1, high=MAX_SHARDS, zero_unsets=True),
        converter=_zero_as_unset,
        help="Shard count; 0 adopts the count the publishers recorded in Redis.",
    )
    max_batch: int = _setting(
        500,
        toml="relay.max_batch",
        check=Bounds(above=0, high=4000),
        help="Most commands per /api/batch request.",
    )
    max_batch_bytes: int = _setting(
        1_000_000,
        toml="relay.max_batch_bytes",
        check=_POSITIVE,
        help="Most envelope bytes claimed for one batch.",
    )
    lease_ttl: float = _setting(
        10.0,
        toml="relay.lease_ttl",
        check=Bounds(low=1, high=600),
        help="Seconds a shard lease lasts unless renewed (it is renewed every lease_ttl / 3).",
    )
    retry_initial: float = _setting(
        0.05,
        toml="relay.retry_initial",
        check=Bounds(low=0.001, high=60),
        help="Seconds before the first retry; the delay doubles up to retry_max.",
    )
    retry_max: float = _setting(
        5.0,
        toml="relay.retry_max",
        check=Bounds(low=0.01, high=300),
        help="Longest delay between retries, in seconds.",
    )
    idle_wait: float = _setting(
        1.0,
        toml="relay.idle_wait",
        check=Bounds(low=0.01, high=60),
        help="Seconds an idle worker waits for new messages before it checks its shard again.",
    )
    stuck_after: float = _setting(
        60.0,
        toml="relay.stuck_after",
        check=Bounds(low=1, high=86_400),
        help="Seconds of lag after which /health reports a shard as stuck.",
    )
    version_memory: int = _setting(
        10_000,
        toml="relay.version_memory",
        check=Bounds(low=100, high=10_000_000),
        help="(channel, key) pairs per shard whose last delivered version the relay "
        "remembers for monotonic delivery: at least the last this many delivered, in "
        "Redis (about twice as many at most).",
    )
    latest_lookahead: int = _setting(
        10_000,
        toml="relay.latest_lookahead",
        check=Bounds(low=0, high=1_000_000),
        help="Queued messages per shard the relay reads ahead of its batch for 'latest' "
        "channels, to skip versions that a newer one in the queue supersedes; 0 looks "
        "at the batch only.",
    )
    late_delivery: tuple[LatePolicy, ...] = _setting(
        (),
        toml="late_delivery",
        converter=tuple,
        check=_ValidPolicies(),
        help="Per channel pattern, the age past which a message is dropped instead of "
        "delivered; the first matching pattern decides.",
    )
    freshness: tuple[FreshnessRule, ...] = _setting(
        (),
        toml="freshness",
        converter=tuple,
        check=_ValidFreshness(),
        help="Per channel pattern, which versions of a key the relay sends: 'all' (every "
        "version, in order), 'monotonic' (never one that is not newer than the last it "
        "delivered; channels matching no pattern) or 'latest' (monotonic, and only the "
        "newest of each key in hand); the first matching pattern decides.",
    )
    metrics_host: str = _setting(
        "127.0.0.1",
        toml="metrics.host",
        check=Host(),
        help="Bind address of the /metrics, /health and /livez endpoints.",
    )
    metrics_port: int = _setting(
        9108,
        toml="metrics.port",
        check=Bounds(low=0, high=65535),
        help="Port of the /metrics, /health and /livez endpoints; 0 disables them.",
    )
    log_format: str = _setting(
        "console",
        toml="log.format",
        check=OneOf(("console", "json")),
        help="Human-readable lines, or one JSON object per line.",
    )
    log_level: str = _setting(
        "info",
        toml="log.level",
        check=OneOf(("debug", "info", "warning", "error"), ignore_case=True),
        help="Least severe level that is logged.",
    )
    tracing: bool = _setting(
        False,
        toml="tracing.enabled",
        check=_OpenTelemetryInstalled(),
        help="Send each batch of traced messages in an OpenTelemetry span continuing the "
        "publishers' traces (needs the otel extra; spans go to the configured tracer provider).",
    )

    @property
    def api_urls(self) -> tuple[str, ...]:
        """The Centrifugo nodes' API URLs (``api_url`` may name several)."""
        return split_urls(self.api_url)

    @property
    def lease_renew_interval(self) -> float:
        """How often leases are renewed (a third of their TTL)."""
        return self.lease_ttl / 3

    def rules_for(self, channel: str) -> ChannelRules:
        """What the channel patterns say about ``channel``.

        Cached over all settings; a caller on the hot path keeps its own cache
        keyed by the channel alone (hashing the settings' pattern tuples on every
        call costs more than the lookup saves).
        """
        return _channel_rules(self.late_delivery, self.forward_version, self.freshness, channel)

    def max_age_ms(self, channel: str, ttl_ms: int | None) -> int | None:
        """How old a message for ``channel`` may be when delivered (None: any age)."""
        return self.rules_for(channel).max_age(ttl_ms)

    def forwards_version(self, channel: str) -> bool:
        """Whether publications to ``channel`` carry Centrifugo's ``version``."""
        return self.rules_for(channel).forward_version

    def freshness_of(self, channel: str) -> Freshness:
        """Which versions of a key the relay sends on ``channel`` (``relay.freshness``)."""
        return self.rules_for(channel).freshness


def _shown(default: object) -> str:
    """A default as the TOML file spells it (None, an unset count, is 0)."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if default == ():
        return "none"
    return "0" if default is None else str(default)


def _table() -> tuple[Setting, ...]:
    attrs.resolve_types(RelaySettings)
    rows = []
    for field in attrs.fields(RelaySettings):
        row: Setting = field.metadata[_ROW]
        # attrs.Factory is a class at run time; its stubs declare a function.
        computed = isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
        default = None if computed else field.default
        shown = row.shown_default or ("required" if row.required else _shown(default))
        env = row.env or ENV_PREFIX + field.name.upper()
        rows.append(
            attrs.evolve(
                row, name=field.name, type=field.type, default=default, env=env, shown_default=shown
            )
        )
    return tuple(rows)


SETTINGS: tuple[Setting, ...] = _table()
"""Every relay setting, in the order of the TOML file's sections."""

_BY_NAME = {setting.name: setting for setting in SETTINGS}


def setting_named(name: str) -> Setting:
    """The row of the setting called ``name`` (a ``RelaySettings`` field); KeyError if none."""
    return _BY_NAME[name]


@attrs.frozen
class ChannelRules:
    """What the relay's channel patterns say about one channel."""

    max_age_ms: int | None
    """``late_delivery``'s limit (None: any age)."""
    forward_version: bool
    freshness: Freshness

    def max_age(self, ttl_ms: int | None) -> int | None:
        """How old a message may be when delivered: its own ``ttl_ms`` wins."""
        return self.max_age_ms if ttl_ms is None else ttl_ms


@functools.lru_cache(maxsize=8192)
def _channel_rules(
    late_delivery: tuple[LatePolicy, ...],
    forward_version: tuple[str, ...],
    freshness: tuple[FreshnessRule, ...],
    channel: str,
) -> ChannelRules:
    """The rules for a channel; cached, as channels repeat endlessly."""
    max_age = next(
        (p.max_age_ms for p in late_delivery if fnmatch.fnmatchcase(channel, p.pattern)), None
    )
    mode = next(
        (r.mode for r in freshness if fnmatch.fnmatchcase(channel, r.pattern)), DEFAULT_FRESHNESS
    )
    forward = any(fnmatch.fnmatchcase(channel, p) for p in forward_version)
    return ChannelRules(max_age, forward, mode)
