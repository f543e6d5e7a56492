"""Reading and checking the JSON log lines of the relay and the forwarder.

``json_line_problems`` holds a log to the documented format (docs/operations.md,
"Structured logs"): every line a JSON object with ``time`` (ISO 8601, UTC,
milliseconds), ``level``, ``name`` and ``message``, any other key one of
``LOG_FIELDS`` with its type. The integration tests run it over every line
the relays and forwarders they start write (``tests/integration/conftest.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from centrifugo_async.logs import LOG_FIELDS

__all__ = ["json_line_problems", "log_records", "logged"]

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
TEXT_KEYS = {"exc_info", "stack_info"}
"""Added by the formatter to a record logged with a traceback or a stack."""


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON log, one per complete non-empty line.

    A last line without its newline may still be being written: it is left out.
    """
    lines = text.split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def logged(text: str, message: str, **fields: object) -> bool:
    """Whether the JSON log ``text`` has a record of ``message`` with these field values."""
    return any(
        record["message"] == message and all(record.get(k) == v for k, v in fields.items())
        for record in log_records(text)
    )


def json_line_problems(text: str, source: str) -> list[str]:
    """What in ``text`` breaks the documented JSON log format (nothing: an empty list)."""
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"{where} is not JSON: {line[:200]}")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where} is not a JSON object: {line[:200]}")
            continue
        problems.extend(f"{where}: {p} in {line[:300]}" for p in _record_problems(record))
    return problems


def _record_problems(record: dict[str, Any]) -> list[str]:
    problems = []
    if not ISO_UTC.fullmatch(str(record.get("time"))):
        problems.append(f"time {record.get('time')!r} is not ISO 8601 UTC with milliseconds")
    if record.get("level") not in LEVELS:
        problems.append(f"level {record.get('level')!r} is not a level")
    for key in ("name", "message"):
        if not isinstance(record.get(key), str):
            problems.append(f"{key} is missing or not a string")
    for key, value in record.items():
        if key in ("time", "level", "name", "message"):
            continue
        if key in TEXT_KEYS:
            if not isinstance(value, str):
                problems.append(f"{key} is not a string")
            continue
        expected = LOG_FIELDS.get(key)
        if expected is None:
            problems.append(f"field {key!r} is not documented")
        elif not _has_type(value, expected):
            problems.append(f"field {key!r} is {value!r}, not of type {expected.__name__}")
    return problems


def _has_type(value: object, expected: type) -> bool:
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)
