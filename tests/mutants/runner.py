"""Apply each safety mutant to a scratch copy of the tree and require the tests to catch it.

The working tree is never touched: tracked and untracked (not ignored) files are
copied to a temporary directory, each mutant's patches are applied there, its
tests run there (``PYTHONPATH`` points at the copy, so relay processes started
by the tests run the mutant too), and the files are restored before the next
mutant. Before any mutant, the same tests must pass on the unmodified copy.

A mutant is *caught* when pytest reports a failed test; it *survived* when every
test passed. A patch that does not apply, a pytest error (exit code other than
0 or 1) or a run past its time limit fails the check, as does a survivor.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from .catalogue import MUTANTS, Mutant

__all__ = ["Outcome", "PatchError", "apply", "check", "render", "scratch_copy"]

ROOT = Path(__file__).resolve().parents[2]


class PatchError(Exception):
    """A mutant's anchor text is not in the file exactly once."""


@attrs.frozen
class Outcome:
    mutant: str
    bug: str
    result: str
    """``caught``, ``survived``, ``error``, ``timeout``, ``does not apply`` or ``not run``."""
    detail: str = ""
    """The failed test that caught it, or what went wrong."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result == "caught"


def scratch_copy(root: Path, into: Path) -> Path:
    """Copy the tree's tracked and untracked, not ignored, files into ``into``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = root / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def apply(root: Path, mutant: Mutant) -> dict[Path, str]:
    """Apply ``mutant`` under ``root``; returns the original text of every patched file.

    Every patch is checked before any file is written, so a mutant that does
    not apply leaves the tree as it was.
    """
    originals: dict[Path, str] = {}
    patched: dict[Path, str] = {}
    for patch in mutant.patches:
        path = root / patch.path
        text = patched.get(path) or path.read_text()
        originals.setdefault(path, text)
        found = text.count(patch.old)
        if found != 1:
            raise PatchError(
                f"mutant {mutant.name!r}: its anchor text occurs {found} times in "
                f"{patch.path} (expected once): update tests/mutants/catalogue.py\n"
                f"anchor: {patch.old!r}"
            )
        patched[path] = text.replace(patch.old, patch.new)
    for path, text in patched.items():
        path.write_text(text)
    return originals


def restore(originals: dict[Path, str]) -> None:
    for path, text in originals.items():
        path.write_text(text)


def run_pytest(
    root: Path, tests: Sequence[str], timeout: float, test_timeout: float
) -> tuple[int | None, str]:
    """Run ``tests`` in ``root``; (exit code or None on timeout, output)."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-rf",
        "-p",
        "no:cacheprovider",
        "-o",
        f"timeout={test_timeout:.0f}",
        *tests,
    ]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    process = subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # pytest and the servers it started
        output, _ = process.communicate()
        return None, output
    return process.returncode, output


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ", 1)[0]
    return "(no FAILED line)"


def _check_imports(root: Path) -> None:
    """The copy, not the installed package, must be what the tests import."""
    found = subprocess.run(
        [sys.executable, "-c", "import centrifugo_async; print(centrifugo_async.__file__)"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the scratch copy is not the code under test: imported {found}")


def check(
    mutants: Iterable[Mutant] = MUTANTS,
    *,
    root: Path = ROOT,
    timeout: float = 240.0,
    test_timeout: float = 120.0,
    budget: float = 840.0,
    keep: bool = False,
    progress: bool = True,
    each: bool = False,
) -> tuple[bool, list[Outcome]]:
    """Run every mutant; (baseline passed and every mutant caught, outcomes).

    With ``each``, every test of a mutant runs on its own and must fail by
    itself (slower: it shows that each listed test catches the bug).
    """
    mutants = list(mutants)
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="ca-mutants-"))
    outcomes: list[Outcome] = []
    try:
        scratch_copy(root, scratch)
        _check_imports(scratch)
        tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        code, output = run_pytest(scratch, tests, timeout, test_timeout)
        baseline = Outcome(
            "(none: baseline)",
            "the unmodified tree",
            "passed" if code == 0 else ("timeout" if code is None else "failed"),
            "" if code == 0 else _first_failure(output),
            time.monotonic() - started,
        )
        outcomes.append(baseline)
        if code != 0:
            print(output[-6000:], file=sys.stderr)
            return False, outcomes
        for mutant in mutants:
            if time.monotonic() - started > budget:
                outcomes.append(Outcome(mutant.name, mutant.bug, "not run", "over the time budget"))
                continue
            runs = [(t,) for t in mutant.tests] if each else [mutant.tests]
            for selected in runs:
                outcome = _run_one(scratch, mutant, selected, timeout, test_timeout)
                outcomes.append(outcome)
                if progress:
                    seconds = f"{outcome.seconds:.0f} s"
                    print(
                        f"{outcome.mutant}: {outcome.result} {outcome.detail} ({seconds})",
                        file=sys.stderr,
                    )
    finally:
        if keep:
            print(f"scratch copy kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return all(o.ok for o in outcomes[1:]), outcomes


def _run_one(
    scratch: Path, mutant: Mutant, tests: Sequence[str], timeout: float, test_timeout: float
) -> Outcome:
    started = time.monotonic()
    try:
        originals = apply(scratch, mutant)
    except PatchError as exc:
        return Outcome(mutant.name, mutant.bug, "does not apply", str(exc).splitlines()[0])
    try:
        code, output = run_pytest(scratch, tests, timeout, test_timeout)
    finally:
        restore(originals)
    seconds = time.monotonic() - started
    if code is None:
        return Outcome(mutant.name, mutant.bug, "timeout", f"over {timeout:.0f} s", seconds)
    if code == 1:
        return Outcome(mutant.name, mutant.bug, "caught", _first_failure(output), seconds)
    if code == 0:
        return Outcome(mutant.name, mutant.bug, "survived", f"passed: {' '.join(tests)}", seconds)
    return Outcome(
        mutant.name, mutant.bug, "error", f"pytest exit code {code}: {output[-300:]!r}", seconds
    )


def render(outcomes: Sequence[Outcome]) -> str:
    """The outcomes as a markdown table."""
    lines = ["| mutant | deliberate bug | result | caught by | s |", "|---|---|---|---|--:|"]
    for o in outcomes:
        detail = o.detail.removeprefix("tests/")
        lines.append(f"| {o.mutant} | {o.bug} | {o.result} | {detail} | {o.seconds:.0f} |")
    return "\n".join(lines)
