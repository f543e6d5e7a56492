"""Log set-up for the relay, the forwarder and the CLI: console or JSON lines, no secrets.

Each notable event is one record: a short, constant message saying what
happened, and its details as structured fields passed with ``extra``::

    log.warning("dead-lettered", extra={"shard": 3, "reason": "rejected", "code": 102})

JSON lines carry the fields as real keys (numbers stay numbers), so a log
pipeline can filter on ``shard`` or ``reason`` without parsing text; console
lines render them as ``key=value`` after the message. ``LOG_FIELDS`` is the
documented set of field names and their types (docs/operations.md,
"Structured logs"); the integration tests hold every line the relay and the
forwarder write to it. A field whose value is None is left out: it does not
apply to that event. Timestamps are ISO 8601 in UTC with milliseconds.

A filter masks every configured secret (the API key, the passwords in the
Redis and API URLs) wherever it would appear: in the message, in any string
field, in exception texts. ``mask_url`` masks the password of a URL the relay
prints on purpose (``config check``, start-up errors, log lines).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any, Final
from urllib.parse import unquote, urlsplit

from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "LOG_FIELDS",
    "configure_logging",
    "log_handler",
    "mask_url",
    "secrets_of",
    "url_passwords",
]

MASK = "***"

LOG_FIELDS: Final[Mapping[str, type]] = {
    "api": str,
    "cause": str,
    "channel": str,
    "code": int,
    "count": int,
    "delivered": int,
    "error": str,
    "exit_code": int,
    "flag": str,
    "forwarded": int,
    "forwarder": str,
    "lanes": list,
    "lease": str,
    "old_shards": int,
    "owns": int,
    "peer": str,
    "port": int,
    "prefix": str,
    "reason": str,
    "relay": str,
    "retry_in": float,
    "share": int,
    "shard": int,
    "shards": int,
    "size": int,
    "timeout": float,
}
"""Every structured field a log record of this package may carry, with its JSON type.

``float`` fields are seconds, rounded to milliseconds. The table in
docs/operations.md says which events carry which field.
"""

_STANDARD_ATTRIBUTES: Final = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"}
)
"""Attributes every ``LogRecord`` has: whatever else a record carries came from ``extra``."""

_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&#]*")
_BARE_VALUE = re.compile(r"[^\s=\"]+")

_CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_JSON_FIELDS = ("asctime", "levelname", "name", "message")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of ``record`` (from ``extra``), None values left out."""
    return {
        name: round(value, 3) if isinstance(value, float) else value
        for name, value in vars(record).items()
        if name not in _STANDARD_ATTRIBUTES and value is not None
    }


def _iso_utc(record: logging.LogRecord) -> str:
    """``2026-11-28T05:30:27.211Z``: ISO 8601, UTC, milliseconds."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _console_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class _ConsoleFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``; values with spaces are quoted."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_utc(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = _fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{name}={_console_value(value)}" for name, value in fields.items())
        return f"{line} {pairs}"


class _JsonLineFormatter(JsonFormatter):
    """One JSON object per record: ``time``, ``level``, ``name``, ``message``, then the fields."""

    def __init__(self) -> None:
        super().__init__(
            " ".join(f"%({name})s" for name in _JSON_FIELDS),
            rename_fields={"levelname": "level", "asctime": "time"},
            reserved_attrs=list(_STANDARD_ATTRIBUTES),
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_utc(record)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {
            name: round(value, 3) if isinstance(value, float) else value
            for name, value in log_data.items()
            if value is not None
        }


class _RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg, record.args = self._masked(record.getMessage()), None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRIBUTES:
                setattr(record, name, self._masked_value(value))
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, self._masked(text)
        return True

    def _masked(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def _masked_value(self, value: object) -> object:
        if isinstance(value, str):
            return self._masked(value)
        if isinstance(value, list | tuple):
            return [self._masked_value(item) for item in value]
        return value


def mask_url(url: str) -> str:
    """``url`` with its passwords replaced by ``***``: the one of ``user:password@``
    and a ``password=`` query parameter (``redis://host/0?password=...``)."""
    head, question, tail = url.partition("?")
    if question:
        query, hash_, fragment = tail.partition("#")
        tail = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", query) + hash_ + fragment
    scheme, sep, rest = head.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        userinfo, at, host = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if at and colon:
            head = f"{scheme}://{user}:{MASK}@{host}{slash}{path}"
    return head + question + tail


def url_passwords(url: str) -> list[str]:
    """The passwords ``url`` carries, as written and percent-decoded."""
    found = []
    try:
        parts = urlsplit(url)
        found.append(parts.password or "")
    except ValueError:
        parts = None
    if parts is not None:
        for pair in parts.query.split("&"):
            name, _, value = pair.partition("=")
            if name.lower() == "password":
                found.append(value)
    return [v for password in found for v in dict.fromkeys((password, unquote(password))) if v]


def secrets_of(api_key: str, *urls: str) -> list[str]:
    """The values that must never reach a log line: the key and the URLs' passwords."""
    return [api_key, *(password for url in urls for password in url_passwords(url))]


def log_handler(
    fmt: str = "console", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """A handler writing records to ``stream`` (stderr) in ``fmt`` ("console" or "json"),
    with ``secrets`` masked."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(
        _JsonLineFormatter() if fmt == "json" else _ConsoleFormatter(_CONSOLE_FORMAT)
    )
    handler.addFilter(_RedactSecrets(secrets))
    return handler


def configure_logging(level: str, fmt: str = "console", secrets: Iterable[str] = ()) -> None:
    """Route every log record to stderr in ``fmt`` ("console" or "json")."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(fmt, secrets)]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
