"""Log set-up for the relay and the CLI: console or JSON lines, secrets never printed.

Each notable event is one line. Messages carry their details as ``key=value``
pairs, which read well on a console and stay greppable inside JSON's
``message``. A filter masks every configured secret (the API key, the
passwords in the Redis and API URLs) wherever it would appear, including in
exception texts; ``mask_url`` masks the password of a URL the relay prints on
purpose (``config check``, start-up errors, log lines).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from pythonjsonlogger.json import JsonFormatter

__all__ = ["configure_logging", "mask_url", "secrets_of", "url_passwords"]

MASK = "***"

_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&#]*")

_CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        for secret in self._secrets:
            message = message.replace(secret, MASK)
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self._secrets:
                text = text.replace(secret, MASK)
            record.exc_info, record.exc_text = None, text
        return True


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


def configure_logging(level: str, fmt: str = "console", secrets: Iterable[str] = ()) -> None:
    """Route every log record to stderr in ``fmt`` ("console" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(_JSON_FIELDS, rename_fields={"levelname": "level", "asctime": "time"})
        )
    else:
        handler.setFormatter(logging.Formatter(_CONSOLE_FORMAT))
    handler.addFilter(_RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
