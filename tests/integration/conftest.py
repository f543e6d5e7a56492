"""Every log line of the integration tests is held to the documented JSON format.

The ``centrifugo_async`` loggers of in-process relays and forwarders write
through the JSON formatter the ``--log-format json`` processes use, at every
level; relay and forwarder processes are started with ``--log-format json``
unless the test chose a format. At the end of each test (or when a process is
closed, before its log is removed) every line must be a JSON object with the
documented fields and types (``tests/support/logs.py``).
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from centrifugo_async.logs import log_handler
from devstack import RelayProcess
from devstack.forwarder import ForwarderProcess
from tests.support.logs import json_line_problems


@pytest.fixture(autouse=True)
def structured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    lines = io.StringIO()
    handler = log_handler("json", stream=lines)
    logger = logging.getLogger("centrifugo_async")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    problems: list[str] = []
    for process_class in (RelayProcess, ForwarderProcess):
        _check_process_logs(monkeypatch, process_class, problems)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    problems.extend(json_line_problems(lines.getvalue(), "in-process log"))
    assert not problems, "log lines that break the documented format:\n" + "\n".join(problems)


def _check_process_logs(
    monkeypatch: pytest.MonkeyPatch, process_class: Any, problems: list[str]
) -> None:
    """Start ``process_class`` with JSON logs; check its log when it is closed."""
    start, close = process_class.start, process_class.close

    def start_with_json_logs(self: Any) -> Any:
        if "--log-format" not in self.args:
            self.args += ["--log-format", "json"]
        return start(self)

    def close_after_checking(self: Any) -> None:
        self.kill()  # the log is complete once the process is gone
        if _json_format(self.args) and self.log_path.exists():
            problems.extend(json_line_problems(self.log(), f"{self.name} {self.log_path}"))
        close(self)

    monkeypatch.setattr(process_class, "start", start_with_json_logs)
    monkeypatch.setattr(process_class, "close", close_after_checking)


def _json_format(args: list[str]) -> bool:
    return any(
        flag == "--log-format" and value == "json" for flag, value in itertools.pairwise(args)
    )
