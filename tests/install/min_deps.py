"""The lowest dependency versions pyproject.toml allows: ``python -m tests.install.min_deps``.

Prints one requirement per line: every runtime dependency, and every
dependency of an extra (``outbox``, ``otel``, ``client``: the tests exercise
them all), pinned to its ``>=`` bound (``redis[hiredis]>=5.0.1`` becomes
``redis[hiredis]==5.0.1``), then the tools the test suite runs with, as the
``test`` group allows them (the newest the pins allow).
``scripts/check-min-deps`` installs them into a fresh virtualenv and runs the
unit and integration tests there, so a bound that is too low fails in CI and
not on a user's machine.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

TEST_TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout", "opentelemetry-sdk", "sqlalchemy")
"""What running tests/unit and tests/integration needs besides the package and its extras
(the SDK records the relay's spans; the outbox's SQLAlchemy helpers have no extra)."""

_REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[^\]]*\])?\s*"
    r"(?P<specifiers>[^;]*?)\s*(?:;\s*(?P<marker>.+))?$"
)


def lowest(requirement: str) -> str:
    """``requirement`` pinned to its lower bound; every runtime dependency must have one."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    bounds = [s.strip() for s in match["specifiers"].split(",") if s.strip().startswith(">=")]
    if len(bounds) != 1:
        raise ValueError(f"{requirement!r} needs exactly one '>=' lower bound")
    marker = f"; {match['marker']}" if match["marker"] else ""
    version = bounds[0].removeprefix(">=").strip()
    return f"{match['name']}{match['extras'] or ''}=={version}{marker}"


def name_of(requirement: str) -> str:
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    return match["name"].lower()


def runtime_requirements(pyproject: dict[str, Any]) -> list[str]:
    """The dependencies and those of every extra, in pyproject.toml's order."""
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(r for group in extras.values() for r in group)]


def requirements(pyproject: dict[str, Any]) -> list[str]:
    runtime = [lowest(r) for r in runtime_requirements(pyproject)]
    tools = [r for r in pyproject["dependency-groups"]["test"] if name_of(r) in TEST_TOOLS]
    missing = set(TEST_TOOLS) - {name_of(r) for r in tools}
    if missing:
        raise ValueError(f"the test group lacks {sorted(missing)}")
    return runtime + tools


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    print("\n".join(requirements(pyproject)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
