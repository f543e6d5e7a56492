"""The packages' metadata, without building them (scripts/check-install builds and
installs both): one licence, one repository address, pages that stand alone on
PyPI and npm, development tools kept out of the extras, one version."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import centrifugo_async
from centrifugo_async.cli import main
from tests.install.artifacts import problems_outside_the_repository

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/centrifugo-async/centrifugo-async"
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_JSON: dict[str, Any] = json.loads((ROOT / "js-client" / "package.json").read_text())


def test_both_packages_ship_the_same_mit_licence() -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n")
    assert "Copyright (c) 2026 The centrifugo-async authors" in licence
    assert (ROOT / "js-client" / "LICENSE").read_text() == licence
    assert PYPROJECT["project"]["license"] == PACKAGE_JSON["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_both_packages_point_at_one_repository() -> None:
    urls = PYPROJECT["project"]["urls"]
    assert urls["Repository"] == urls["Homepage"] == REPOSITORY
    assert all(url.startswith(REPOSITORY) for url in urls.values())
    assert PACKAGE_JSON["repository"] == {
        "type": "git",
        "url": f"git+{REPOSITORY}.git",
        "directory": "js-client",
    }
    assert PACKAGE_JSON["homepage"].startswith(f"{REPOSITORY}/tree/main/js-client")
    assert PACKAGE_JSON["bugs"]["url"] == f"{REPOSITORY}/issues"


def test_the_registry_pages_stand_alone() -> None:
    pypi_page = ROOT / PYPROJECT["project"]["readme"]
    assert pypi_page.name != "README.md"  # the repository's README is for a clone
    assert problems_outside_the_repository(pypi_page.read_text()) == []
    assert problems_outside_the_repository((ROOT / "js-client" / "README.md").read_text()) == []


def test_the_js_client_is_publishable() -> None:
    assert "private" not in PACKAGE_JSON
    assert PACKAGE_JSON["files"] == ["src"]
    assert "centrifuge" in PACKAGE_JSON["peerDependencies"]


def test_development_tools_are_dependency_groups_not_extras() -> None:
    # User-facing extras only: the subscriber helpers, the transactional outbox, tracing.
    assert set(PYPROJECT["project"]["optional-dependencies"]) == {"client", "outbox", "otel"}
    groups = PYPROJECT["dependency-groups"]
    development = {"test", "bench", "example", "docs"}
    assert development <= set(groups)
    assert {include["include-group"] for include in groups["dev"]} == development


def test_version_is_the_installed_distributions_and_the_commands() -> None:
    assert centrifugo_async.__version__ == PYPROJECT["project"]["version"]
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip().endswith(f"version {centrifugo_async.__version__}")
