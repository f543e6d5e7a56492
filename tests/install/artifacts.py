"""What the built Python artifacts carry: ``python -m tests.install.artifacts DIST``.

The sdist holds what it takes to check and document the package, not only to
install it: the licence, the changelog, the documentation and the test suite
with the local servers it starts. The wheel holds the ``centrifugo_async``
package alone, with its licence, and metadata that reads well on PyPI: the
project URLs, a long description whose links all work outside the repository,
and no development-only extras.
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

SDIST_MUST_HOLD = [
    "LICENSE",
    "CHANGELOG.md",
    "README.md",
    "pyproject.toml",
    "mkdocs.yml",
    "docs/index.md",
    "tests/conftest.py",
    "tests/vectors/envelopes.json",
    "devstack/services.py",
    "centrifugo_async/py.typed",
]
PROJECT_URLS = ["Homepage", "Documentation", "Repository", "Issues", "Changelog"]
USER_EXTRAS = ["client", "outbox", "otel"]

_LINK = re.compile(r"\]\(([^)\s]+)[^)]*\)|<([a-z]+:[^>\s]+)>")


def links(markdown: str) -> list[str]:
    """The targets of the Markdown links and autolinks in ``markdown``."""
    return [inline or auto for inline, auto in _LINK.findall(markdown)]


def problems_outside_the_repository(markdown: str) -> list[str]:
    """What makes ``markdown`` read badly on a registry page: relative links (they
    point nowhere there) and ``scripts/...`` commands (they exist only in a clone)."""
    found = [f"relative link {t!r}" for t in links(markdown) if not t.startswith("https://")]
    found += [f"clone-only command {m!r}" for m in re.findall(r"scripts/[\w-]+", markdown)]
    return found


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    return [f"the sdist lacks {name}" for name in SDIST_MUST_HOLD if name not in names]


def check_wheel(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    found = [
        f"the wheel carries {top}/"
        for top in sorted({n.split("/")[0] for n in names} - {"centrifugo_async", dist_info})
    ]
    if f"{dist_info}/licenses/LICENSE" not in names:
        found.append("the wheel lacks its LICENSE")
    return found + check_metadata(metadata)


def check_metadata(metadata: Message) -> list[str]:
    found = []
    if metadata["License-Expression"] != "MIT":
        found.append(f"License-Expression is {metadata['License-Expression']!r}")
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    found += [f"no Project-URL {label}" for label in PROJECT_URLS if label not in urls]
    extras = metadata.get_all("Provides-Extra") or []
    if extras != USER_EXTRAS:
        found.append(f"extras offered to users: {extras}, expected {USER_EXTRAS}")
    if not metadata.get_all("Author") and not metadata.get_all("Author-email"):
        found.append("no author")
    if metadata["Description-Content-Type"] != "text/markdown":
        found.append(f"Description-Content-Type is {metadata['Description-Content-Type']!r}")
    description = metadata.get_payload()
    assert isinstance(description, str)
    found += [f"long description: {p}" for p in problems_outside_the_repository(description)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.install.artifacts", description=__doc__)
    parser.add_argument("dist", type=Path, help="the directory `python -m build` wrote")
    dist = parser.parse_args().dist
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    problems = check_sdist(sdist) + check_wheel(wheel)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        sys.exit(1)
    print(f"ok  {sdist.name}: licence, changelog, docs, tests; {wheel.name}: the package alone")
    print("ok  wheel metadata: MIT, project URLs, extras [client] [outbox] [otel], a description")


if __name__ == "__main__":
    main()
