"""Log set-up for the relay and the CLI: console or JSON lines, secrets never printed.

Each notable event is one line. Messages carry their details as ``key=value``
pairs, which read well on a console and stay greppable inside JSON's
``message``. A filter masks every configured secret (the API key, the Redis
password) wherever it would appear, including in exception texts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from urllib.parse import urlsplit

from pythonjsonlogger.json import JsonFormatter

__all__ = ["configure_logging", "secrets_of"]

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
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self._secrets:
                text = text.replace(secret, "***")
            record.exc_info, record.exc_text = None, text
        return True


def secrets_of(api_key: str, redis_url: str) -> list[str]:
    """The values that must never reach a log line."""
    secrets = [api_key]
    try:
        password = urlsplit(redis_url).password
    except ValueError:
        password = None
    if password:
        secrets.append(password)
    return secrets


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
