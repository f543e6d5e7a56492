"""Log lines: a short message plus structured fields, in both formats, secrets masked."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import centrifugo_async
from centrifugo_async.logs import LOG_FIELDS, log_handler
from tests.support.logs import ISO_UTC, json_line_problems

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-pw"


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("centrifugo_async.test-logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.handlers.clear()


def emit(logger: logging.Logger, fmt: str) -> str:
    stream = io.StringIO()
    logger.handlers[:] = [log_handler(fmt, [SECRET], stream)]
    logger.warning(
        "dead-lettered",
        extra={
            "shard": 3,
            "reason": "rejected",
            "code": 102,
            "channel": "obj:1",
            "error": "unknown channel",
            "retry_in": 0.123456,
            "lease": None,
        },
    )
    return stream.getvalue()


def test_console_lines_read_as_message_then_key_value_pairs(logger: logging.Logger) -> None:
    line = emit(logger, "console").rstrip("\n")
    time, rest = line.split(" ", 1)
    assert ISO_UTC.fullmatch(time)
    assert rest == (
        "WARNING centrifugo_async.test-logs dead-lettered shard=3 reason=rejected code=102 "
        'channel=obj:1 error="unknown channel" retry_in=0.123'
    )


def test_json_lines_carry_the_fields_as_typed_keys(logger: logging.Logger) -> None:
    text = emit(logger, "json")
    record = json.loads(text)
    assert list(record) == [
        "time",
        "level",
        "name",
        "message",
        "shard",
        "reason",
        "code",
        "channel",
        "error",
        "retry_in",
    ]
    assert record["message"] == "dead-lettered"
    assert (record["shard"], record["code"], record["retry_in"]) == (3, 102, 0.123)
    assert ISO_UTC.fullmatch(record["time"]) and record["time"].endswith("Z")
    assert json_line_problems(text, "test") == []


def test_the_time_is_utc_whatever_the_local_zone(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        stream = io.StringIO()
        handler = log_handler("json", (), stream)
        record = logger.makeRecord(logger.name, logging.INFO, "f", 1, "m", None, None)
        record.created, record.msecs = 31536000.25, 250.0
        handler.handle(record)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert json.loads(stream.getvalue())["time"] == "1971-01-01T00:00:00.250Z"


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_secrets_are_masked_in_fields_messages_and_tracebacks(
    logger: logging.Logger, fmt: str
) -> None:
    stream = io.StringIO()
    logger.handlers[:] = [log_handler(fmt, [SECRET], stream)]
    logger.warning(
        "waiting for Redis %s",
        SECRET,
        extra={"error": f"AUTH {SECRET} refused", "lanes": [SECRET], "api": f"x:{SECRET}@h"},
    )
    try:
        raise RuntimeError(f"connect failed: {SECRET}")
    except RuntimeError:
        logger.exception("stopped by an error", extra={"error": SECRET})
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count("***") >= 6
    assert "AUTH *** refused" in text


def test_the_documented_field_table_is_the_one_the_code_uses() -> None:
    page = (ROOT / "docs" / "operations.md").read_text()
    section = page.split("\n### Fields\n", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", section, re.MULTILINE)
    documented = dict(rows)
    assert len(documented) == len(rows)
    types = {"integer": int, "number": float, "string": str, "array of integers": list}
    assert {name: types[kind] for name, kind in documented.items()} == dict(LOG_FIELDS)


def test_every_field_the_code_logs_is_documented() -> None:
    """Rare events too (a hung Redis at shutdown): every ``extra={...}`` in the package."""
    package = Path(centrifugo_async.__file__).parent
    used: dict[str, list[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "extra":
                    assert isinstance(keyword.value, ast.Dict), f"{path}:{node.lineno}"
                    for key in keyword.value.keys:
                        assert isinstance(key, ast.Constant), f"{path}:{node.lineno}"
                        used.setdefault(key.value, []).append(f"{path.name}:{node.lineno}")
    assert set(used) - set(LOG_FIELDS) == set()
    assert len(used) >= 20
