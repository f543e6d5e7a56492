"""The lower bounds scripts/check-min-deps installs, read from pyproject.toml."""

from __future__ import annotations

import tomllib

import pytest

from tests.install.min_deps import (
    ROOT,
    TEST_TOOLS,
    lowest,
    name_of,
    requirements,
    runtime_requirements,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_runtime_and_extra_dependency_is_pinned_to_its_lower_bound() -> None:
    pins = requirements(PYPROJECT)
    runtime = pins[: len(runtime_requirements(PYPROJECT))]
    assert all("==" in pin for pin in runtime)
    assert "redis[hiredis]==5.0.1" in runtime, "5.0.0 lacks aclose"
    assert {name_of(pin) for pin in runtime} >= {"psycopg", "opentelemetry-api"}, "the extras"
    assert {name_of(pin) for pin in pins[len(runtime) :]} == set(TEST_TOOLS)


@pytest.mark.parametrize(
    ("requirement", "pinned"),
    [
        ("attrs>=23.1", "attrs==23.1"),
        ("redis[hiredis] >= 5.0.1, <9", "redis[hiredis]==5.0.1"),
        ("tomli>=2; python_version < '3.11'", "tomli==2; python_version < '3.11'"),
    ],
)
def test_lower_bounds_are_read(requirement: str, pinned: str) -> None:
    assert lowest(requirement) == pinned


@pytest.mark.parametrize("requirement", ["attrs", "attrs==23.1", "attrs<24", "attrs>=1,>=2"])
def test_a_dependency_without_one_lower_bound_is_refused(requirement: str) -> None:
    with pytest.raises(ValueError, match="lower bound"):
        lowest(requirement)
