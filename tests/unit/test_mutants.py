"""The safety mutants (``scripts/mutants``) still apply to the code and name real tests.

A refactor of the relay that moves a mutant's anchor text makes the mutant check
fail loudly; this test says so in the quick suite already, before the slow check.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.mutants.catalogue import MUTANTS, Mutant, Patch
from tests.mutants.runner import ROOT, PatchError, apply


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_patch_finds_its_anchor_exactly_once(mutant: Mutant, tmp_path: Path) -> None:
    for patch in mutant.patches:
        target = tmp_path / patch.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / patch.path, target)
    originals = apply(tmp_path, mutant)
    for path, text in originals.items():
        assert path.read_text() != text


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_listed_test_exists(mutant: Mutant) -> None:
    assert mutant.tests
    for node in mutant.tests:
        path, _, name = node.partition("::")
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf"^(async )?def {re.escape(name)}\(", source, re.M), node


def test_a_patch_that_does_not_apply_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "module.py").write_text("x = 1\nx = 1\n")
    twice = Mutant(
        "twice", "an ambiguous anchor", (Patch("module.py", "x = 1\n", "x = 2\n"),), ("t",)
    )
    with pytest.raises(PatchError, match="occurs 2 times"):
        apply(tmp_path, twice)
    missing = Mutant(
        "missing", "a lost anchor", (Patch("module.py", "y = 1\n", "y = 2\n"),), ("t",)
    )
    with pytest.raises(PatchError, match="occurs 0 times"):
        apply(tmp_path, missing)
    half = Mutant(
        "half",
        "a second patch that fails",
        (Patch("module.py", "x = 1\nx", "x = 3\nx"), Patch("module.py", "z", "y")),
        ("t",),
    )
    with pytest.raises(PatchError):
        apply(tmp_path, half)
    assert (tmp_path / "module.py").read_text() == "x = 1\nx = 1\n", "a failed mutant wrote"


def test_mutant_names_are_unique() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
