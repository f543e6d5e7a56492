"""Relay configuration from a TOML file, the environment and flags (flags win).

Every setting has one name per source, all derived from its row in the settings
table (``settings.SETTINGS``, the fields of ``RelaySettings``)::

    TOML                          environment                         flag
    [redis] url                   CENTRIFUGO_ASYNC_REDIS_URL          --redis-url
    [centrifugo] api_key          CENTRIFUGO_API_KEY                  --api-key
    [relay] max_batch             CENTRIFUGO_ASYNC_MAX_BATCH          --max-batch
    [late_delivery] "typing:*"    CENTRIFUGO_ASYNC_LATE_DELIVERY      --late-delivery
    [freshness] "cursor:*"        CENTRIFUGO_ASYNC_FRESHNESS          --freshness
    ...

Raw values are parsed by the setting's type (``KINDS``), the same way from each
source. ``load_settings`` merges defaults < file < environment < flags,
validates the result and reports any problem as a ``ConfigError`` naming the key
and where it came from. ``describe`` renders the effective configuration with
its sources and the secrets masked (``centrifugo-async config check``), and
``effective`` the same as JSON values (``config check --json``).

The API key is best given in the environment or in a file (``api_key_file``,
read here); ``exposed_on_command_line`` names the secrets that were passed as
flags instead, which every local user can read in ``ps``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..exceptions import ConfigError
from ..logs import mask_url
from .settings import (
    ENV_PREFIX,
    SETTINGS,
    URL_SEPARATOR,
    Freshness,
    FreshnessRule,
    InvalidSetting,
    LatePolicy,
    RelaySettings,
    Schemes,
    Setting,
    UrlList,
    setting_named,
    split_urls,
)

__all__ = [
    "CONFIG_ENV",
    "KINDS",
    "URL_LIST",
    "ValueKind",
    "describe",
    "effective",
    "exposed_on_command_line",
    "kind_of",
    "load_settings",
    "mask_url",
    "parse_duration_ms",
    "parse_value",
]

CONFIG_ENV = ENV_PREFIX + "CONFIG"
"""Names the TOML file when ``--config`` is not given."""


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
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite duration: {value!r}")
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
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    raise ValueError(f"not an integer: {value!r}")


def _to_float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    raise ValueError(f"not a number: {value!r}")


def _to_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def _to_url_list(value: object) -> str:
    """A TOML list of URLs, or text naming them comma-separated, as ``UrlList`` keeps them."""
    if isinstance(value, str):
        return URL_SEPARATOR.join(split_urls(value))
    if isinstance(value, list | tuple) and all(isinstance(url, str) for url in value):
        return URL_SEPARATOR.join(url.strip() for url in value)
    raise ValueError(f"not a URL or a list of URLs: {value!r}")


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


def _to_freshness(value: object) -> tuple[FreshnessRule, ...]:
    """A TOML table ``{pattern = mode}`` or ``"pattern=mode,pattern=mode"``."""
    modes = ", ".join(repr(m.value) for m in Freshness)
    if isinstance(value, str):
        pairs = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            pattern, sep, mode = item.rpartition("=")
            if not sep:
                raise ValueError(f"expected PATTERN=MODE, got {item!r}")
            pairs.append((pattern.strip(), mode.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ValueError(f"not a table of channel pattern = mode: {value!r}")
    rules = []
    for pattern, mode in pairs:
        try:
            rules.append(FreshnessRule(str(pattern), Freshness(mode)))
        except ValueError:
            raise ValueError(f"mode for {pattern!r} must be one of {modes}, got {mode!r}") from None
    return tuple(rules)


def _optional_int(value: object) -> int | None:
    return None if value in (None, "", 0, "0") else _to_int(value)


@attrs.frozen
class ValueKind:
    """How raw values of one type are read from TOML, the environment or a flag."""

    parse: Callable[[object], Any]
    metavar: str
    """What ``--help`` calls a flag's value."""


KINDS: Mapping[object, ValueKind] = {
    str: ValueKind(_to_str, "TEXT"),
    bool: ValueKind(_to_bool, "BOOLEAN"),
    int: ValueKind(_to_int, "INTEGER"),
    int | None: ValueKind(_optional_int, "INTEGER"),
    float: ValueKind(_to_float, "SECONDS"),  # every float setting is a duration
    tuple[str, ...]: ValueKind(_to_patterns, "PATTERN,..."),
    tuple[LatePolicy, ...]: ValueKind(_to_policies, "PATTERN=AGE,..."),
    tuple[FreshnessRule, ...]: ValueKind(_to_freshness, "PATTERN=MODE,..."),
}
"""Per setting type (a ``RelaySettings`` annotation), how its values are read."""


URL_LIST = ValueKind(_to_url_list, "URL[,URL...]")
"""How a ``UrlList`` setting is read: a string, but a TOML list and a repeated flag too."""


def kind_of(setting: Setting) -> ValueKind:
    """How values of ``setting`` are read; every setting's type has an entry in ``KINDS``."""
    if isinstance(setting.check, UrlList):
        return URL_LIST
    return KINDS[setting.type]


def parse_value(setting: Setting, raw: object) -> Any:
    """``raw`` (TOML value, environment text or flag text) as a value of ``setting``."""
    return kind_of(setting).parse(raw)


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> tuple[RelaySettings, dict[str, str]]:
    """The validated settings and, per setting, where its value came from.

    ``flags`` holds parsed values by setting name; None means "not given".
    A problem raises ``InvalidSetting`` (a ``ConfigError``) naming the setting
    in ``field`` and its source in the message.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config_file is not None:
        for setting, raw in _read_toml(Path(config_file)).items():
            label = f"{setting.toml} in {config_file}"
            values[setting.name], origin[setting.name] = _parse(setting, raw, label), label
    for setting in SETTINGS:
        if environ.get(setting.env):
            label = f"${setting.env}"
            values[setting.name] = _parse(setting, environ[setting.env], label)
            origin[setting.name] = label
    for name, value in (flags or {}).items():
        if value is not None:
            values[name], origin[name] = value, setting_named(name).flag
    if values.get("api_key_file"):
        values["api_key"], origin["api_key"] = _read_api_key(values, origin)
    try:
        settings = RelaySettings(**values)
    except InvalidSetting as exc:
        where = origin.get(exc.field, "default")
        raise InvalidSetting(exc.field, f"{exc} (from {where})") from None
    for setting in SETTINGS:
        origin.setdefault(setting.name, "default")
    return settings, origin


def _read_api_key(values: Mapping[str, Any], origin: Mapping[str, str]) -> tuple[str, str]:
    """The key in the file ``api_key_file`` names, and where it came from."""
    path, given_by = values["api_key_file"], origin["api_key_file"]
    if values.get("api_key"):
        raise InvalidSetting(
            "api_key_file",
            f"give the API key once: api_key_file ({given_by}) and api_key "
            f"({origin['api_key']}) are both set",
        )
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidSetting(
            "api_key_file", f"cannot read api_key_file {path}: {reason} (from {given_by})"
        ) from None
    if not key:
        raise InvalidSetting("api_key_file", f"api_key_file {path} is empty (from {given_by})")
    return key, f"file {path} ({given_by})"


def exposed_on_command_line(settings: RelaySettings, origin: Mapping[str, str]) -> list[str]:
    """Flags that carried a secret: the API key, or a URL with a password."""
    exposed = []
    for setting in SETTINGS:
        if origin.get(setting.name) != setting.flag:
            continue
        value = getattr(settings, setting.name)
        carries_password = isinstance(setting.check, Schemes) and setting.check.mask(value) != value
        if setting.secret or carries_password:
            exposed.append(setting.flag)
    return exposed


def _parse(setting: Setting, raw: object, label: str) -> Any:
    try:
        return parse_value(setting, raw)
    except ValueError as exc:
        raise InvalidSetting(setting.name, f"{label}: {exc}") from None


def _read_toml(path: Path) -> dict[Setting, object]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    by_key = {setting.toml: setting for setting in SETTINGS}
    found: dict[Setting, object] = {}
    for section, content in document.items():
        if section in by_key:  # a whole-table setting such as [late_delivery]
            found[by_key[section]] = content
            continue
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: unknown key {section!r} (expected a [section])")
        for key, value in content.items():
            setting = by_key.get(f"{section}.{key}")
            if setting is None:
                known = sorted(k for k in by_key if k.startswith(f"{section}.")) or sorted(
                    {k.split(".")[0] for k in by_key}
                )
                raise ConfigError(
                    f"{path}: unknown key {section}.{key} (known here: {', '.join(known)})"
                )
            found[setting] = value
    return found


def describe(settings: RelaySettings, origin: Mapping[str, str]) -> str:
    """The effective configuration as TOML-like lines, secrets masked, with sources."""
    lines = []
    section = ""
    for setting in SETTINGS:
        head, _, key = setting.toml.rpartition(".")
        whole_table = not head
        if whole_table:
            head = setting.toml
        if head != section:
            lines.append(f"\n[{head}]")
            section = head
        value = getattr(settings, setting.name)
        comment = f"  # {origin.get(setting.name, 'default')}"
        if whole_table:
            if not value:
                lines.append(f"# (none){comment}")
            for rule in value:
                lines.append(f'"{rule.pattern}" = "{_rule_value(rule)}"{comment}')
            continue
        lines.append(f"{key} = {_render(setting, value)}{comment}")
    return "\n".join(lines).strip() + "\n"


def effective(settings: RelaySettings, origin: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """What ``describe`` shows, as JSON values: per setting, its value and source.

    Keyed by setting name, each entry holds ``value`` (secrets and URL passwords
    masked, late-delivery ages in milliseconds, null for "never" or an unset
    shard count), the ``toml`` key and ``source``.
    """
    result = {}
    for setting in SETTINGS:
        value: Any = getattr(settings, setting.name)
        if setting.secret:
            value = "***" if value else ""
        elif isinstance(setting.check, Schemes) and isinstance(value, str):
            value = setting.check.mask(value)
        elif isinstance(value, tuple):
            value = [_rule_json(v) for v in value]
        result[setting.name] = {
            "value": value,
            "toml": setting.toml,
            "source": origin.get(setting.name, "default"),
        }
    return result


def _rule_value(rule: LatePolicy | FreshnessRule) -> str:
    """The value of a whole-table setting's rule, as the TOML file writes it."""
    if isinstance(rule, FreshnessRule):
        return rule.mode.value
    return "never" if rule.max_age_ms is None else f"{rule.max_age_ms}ms"


def _rule_json(value: object) -> object:
    if isinstance(value, LatePolicy):
        return {"pattern": value.pattern, "max_age_ms": value.max_age_ms}
    if isinstance(value, FreshnessRule):
        return {"pattern": value.pattern, "mode": value.mode.value}
    return value


def _render(setting: Setting, value: object) -> str:
    if setting.secret:
        return '"***"' if value else '""'
    if isinstance(setting.check, Schemes) and isinstance(value, str):
        return f'"{setting.check.mask(value)}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return "0" if value is None else str(value)
