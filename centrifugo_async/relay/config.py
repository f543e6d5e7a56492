"""Relay configuration from a TOML file, the environment and flags (flags win).

Every value has one name per source::

    TOML                          environment                         flag
    [redis] url                   CENTRIFUGO_ASYNC_REDIS_URL          --redis-url
    [centrifugo] api_key          CENTRIFUGO_API_KEY                  --api-key
    [relay] max_batch             CENTRIFUGO_ASYNC_MAX_BATCH          --max-batch
    [late_delivery] "typing:*"    CENTRIFUGO_ASYNC_LATE_DELIVERY      --late-delivery
    ...

``load_settings`` merges defaults < file < environment < flags, validates the
result and reports any problem as a ``ConfigError`` naming the key and where it
came from. ``describe`` renders the effective configuration with its sources and
the secrets masked (``centrifugo-async config check``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..exceptions import ConfigError
from .settings import LatePolicy, RelaySettings

__all__ = ["ENV_PREFIX", "SOURCES", "describe", "load_settings", "parse_duration_ms"]

ENV_PREFIX = "CENTRIFUGO_ASYNC_"


def parse_duration_ms(value: object) -> int | None:
    """``"2s"``, ``"500ms"``, ``"1.5m"``, a number of seconds, or ``"never"`` (None)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip().lower() == "never":
        return None
    elif isinstance(value, str) and (match := re.fullmatch(r"\s*([\d.]+)\s*(ms|s|m|h)?\s*", value)):
        number, unit = float(match.group(1)), match.group(2) or "s"
        seconds = number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    else:
        raise ValueError(f"not a duration (like '2s', '500ms' or 'never'): {value!r}")
    return round(seconds * 1000)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _to_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _to_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def _to_patterns(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, list | tuple) and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise ValueError(f"not a list of channel patterns: {value!r}")


def _to_policies(value: object) -> tuple[LatePolicy, ...]:
    """A TOML table ``{pattern = duration}`` or ``"pattern=duration,pattern=never"``."""
    if isinstance(value, str):
        pairs = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            pattern, sep, duration = item.rpartition("=")
            if not sep:
                raise ValueError(f"expected PATTERN=DURATION, got {item!r}")
            pairs.append((pattern.strip(), duration.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ValueError(f"not a table of channel pattern = duration: {value!r}")
    return tuple(LatePolicy(str(p), parse_duration_ms(d)) for p, d in pairs)


def _optional_int(value: object) -> int | None:
    return None if value in (None, "", 0, "0") else _to_int(value)


@attrs.frozen
class Source:
    """How one setting is spelled in each source, and how its raw value is parsed."""

    field: str
    toml: str
    env: str
    parse: Callable[[object], Any]


def _source(field: str, toml: str, parse: Callable[[object], Any], env: str = "") -> Source:
    return Source(field, toml, env or ENV_PREFIX + field.upper(), parse)


SOURCES = (
    _source("redis_url", "redis.url", _to_str),
    _source("redis_cluster", "redis.cluster", _to_bool),
    _source("prefix", "redis.prefix", _to_str),
    _source("api_url", "centrifugo.api_url", _to_str, env="CENTRIFUGO_API_URL"),
    _source("api_key", "centrifugo.api_key", _to_str, env="CENTRIFUGO_API_KEY"),
    _source("request_timeout", "centrifugo.request_timeout", _to_float),
    _source("forward_version", "centrifugo.forward_version", _to_patterns),
    _source("relay_id", "relay.id", _to_str),
    _source("shards", "relay.shards", _optional_int),
    _source("max_batch", "relay.max_batch", _to_int),
    _source("max_batch_bytes", "relay.max_batch_bytes", _to_int),
    _source("lease_ttl", "relay.lease_ttl", _to_float),
    _source("retry_initial", "relay.retry_initial", _to_float),
    _source("retry_max", "relay.retry_max", _to_float),
    _source("idle_wait", "relay.idle_wait", _to_float),
    _source("stuck_after", "relay.stuck_after", _to_float),
    _source("late_delivery", "late_delivery", _to_policies),
    _source("metrics_host", "metrics.host", _to_str),
    _source("metrics_port", "metrics.port", _to_int),
    _source("log_format", "log.format", _to_str),
    _source("log_level", "log.level", _to_str),
)
SECRETS = frozenset({"api_key"})


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> tuple[RelaySettings, dict[str, str]]:
    """The validated settings and, per field, where its value came from."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config_file is not None:
        for source, raw in _read_toml(Path(config_file)).items():
            label = f"{source.toml} in {config_file}"
            values[source.field], origin[source.field] = _parse(source, raw, label), label
    for source in SOURCES:
        if environ.get(source.env):
            label = f"${source.env}"
            values[source.field] = _parse(source, environ[source.env], label)
            origin[source.field] = label
    for field, value in (flags or {}).items():
        if value is not None:
            values[field], origin[field] = value, "--" + field.replace("_", "-")
    try:
        settings = RelaySettings(**values)
    except ValueError as exc:
        field = next((s.field for s in SOURCES if str(exc).startswith(s.field)), "")
        where = origin.get(field, "default")
        raise ConfigError(f"{exc} (from {where})" if field else str(exc)) from None
    for source in SOURCES:
        origin.setdefault(source.field, "default")
    return settings, origin


def _parse(source: Source, raw: object, label: str) -> Any:
    try:
        return source.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _read_toml(path: Path) -> dict[Source, object]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    by_key = {source.toml: source for source in SOURCES}
    found: dict[Source, object] = {}
    for section, content in document.items():
        if section in by_key:  # a whole-table setting such as [late_delivery]
            found[by_key[section]] = content
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: unknown key {section!r} (expected a [section])")
        for key, value in content.items():
            source = by_key.get(f"{section}.{key}")
            if source is None:
                known = sorted(k for k in by_key if k.startswith(f"{section}.")) or sorted(
                    {k.split(".")[0] for k in by_key}
                )
                raise ConfigError(
                    f"{path}: unknown key {section}.{key} (known here: {', '.join(known)})"
                )
            found[source] = value
    return found


def describe(settings: RelaySettings, origin: Mapping[str, str]) -> str:
    """The effective configuration as TOML-like lines, secrets masked, with sources."""
    lines = []
    section = ""
    for source in SOURCES:
        head, _, key = source.toml.rpartition(".")
        value = getattr(settings, source.field)
        if source.field == "late_delivery":
            head, key = "late_delivery", ""
        if head != section:
            lines.append(f"\n[{head}]")
            section = head
        comment = f"  # {origin.get(source.field, 'default')}"
        if source.field == "late_delivery":
            if not value:
                lines.append(f"# (none){comment}")
            for policy in value:
                age = "never" if policy.max_age_ms is None else f"{policy.max_age_ms}ms"
                lines.append(f'"{policy.pattern}" = "{age}"{comment}')
            continue
        lines.append(f"{key} = {_render(source.field, value)}{comment}")
    return "\n".join(lines).strip() + "\n"


def _render(field: str, value: object) -> str:
    if field in SECRETS:
        return '"***"' if value else '""'
    if field == "redis_url" and isinstance(value, str):
        return f'"{mask_url(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return "0" if value is None else str(value)


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
