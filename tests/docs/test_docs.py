"""The documentation site: it builds in strict mode, and the operations guide matches the code.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from
the nav, a snippet include whose file is gone, or an API reference directive
naming an object that no longer exists; this test turns that into a failure of
the suite with mkdocs' own messages. The build reads only local files.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from centrifugo_async.relay.config import load_settings
from centrifugo_async.relay.metrics import RelayMetrics
from centrifugo_async.relay.settings import SETTINGS, LatePolicy, RelaySettings

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
RELAY_TOML = ROOT / "examples" / "relay.toml"


def test_docs_build_in_strict_mode(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail(
            "mkdocs is not installed: run scripts/setup (it installs the `docs` dependency group)"
        )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_COLOR": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        problems, inside = [], False
        for line in output:
            if line.startswith(("WARNING", "ERROR")):
                inside = True
            elif not line.startswith((" ", "\t")):
                inside = False
            if inside:
                problems.append(line)  # with its indented continuation lines
        pytest.fail(
            "the documentation site does not build (`mkdocs build --strict`):\n"
            + "\n".join(problems or output[-40:]),
            pytrace=False,
        )
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "publisher" / "index.html").is_file()


def _uncommented(text: str) -> str:
    """The example with its commented-out settings (``# key = value``) switched on."""
    return re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.MULTILINE)


WHOLE_TABLES = {s.toml for s in SETTINGS if "." not in s.toml}
"""Settings that are a TOML table of their own: ``[late_delivery]``, ``[freshness]``."""


def _toml_keys(document: dict[str, object]) -> set[str]:
    keys = set()
    for section, content in document.items():
        if section in WHOLE_TABLES or not isinstance(content, dict):
            keys.add(section)
        else:
            keys.update(f"{section}.{key}" for key in content)
    return keys


def test_relay_toml_example_names_every_setting_and_loads() -> None:
    text = RELAY_TOML.read_text(encoding="utf-8")
    every = _toml_keys(tomllib.loads(_uncommented(text)))
    assert every == {setting.toml for setting in SETTINGS}, "examples/relay.toml vs SETTINGS"
    for source in SETTINGS:
        assert source.env in text, f"examples/relay.toml does not name ${source.env}"

    settings, origin = load_settings(RELAY_TOML, environ={"CENTRIFUGO_API_KEY": "k"})
    # The example shows the defaults, except for two late-delivery rules.
    expected = RelaySettings(
        api_key="k",
        relay_id=settings.relay_id,
        late_delivery=(LatePolicy("typing:*", 2000), LatePolicy("orders:*", None)),
    )
    assert settings == expected
    assert origin["relay_id"] == "default" and origin["api_key"] == "$CENTRIFUGO_API_KEY"


def test_operations_guide_names_every_setting_and_metric() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    for source in SETTINGS:
        toml_name = f"[{source.toml}]" if source.toml in WHOLE_TABLES else source.toml
        assert f"`{toml_name}`" in text, f"operations.md: setting {source.toml} missing"
        assert f"`{source.env}`" in text, f"operations.md: ${source.env} missing"
    for family in RelayMetrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{name}`" in text, f"operations.md: metric {name} missing"
