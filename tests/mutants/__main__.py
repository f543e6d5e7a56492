"""``python -m tests.mutants``: every safety mutant must be caught (see runner.py)."""

from __future__ import annotations

import argparse
import sys

from .catalogue import MUTANTS
from .runner import check, render


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per pytest run")
    parser.add_argument("--budget", type=float, default=840.0, help="seconds for the whole check")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument(
        "--each", action="store_true", help="run each listed test on its own: every one must fail"
    )
    args = parser.parse_args()
    if args.list:
        for mutant in MUTANTS:
            print(f"{mutant.name}: {mutant.bug}\n    tests: {', '.join(mutant.tests)}")
        return
    chosen = list(MUTANTS)
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            parser.error(f"unknown mutant(s): {', '.join(sorted(unknown))} (see --list)")
        chosen = [m for m in MUTANTS if m.name in args.only]
    ok, outcomes = check(
        chosen, timeout=args.timeout, budget=args.budget, keep=args.keep, each=args.each
    )
    print(render(outcomes))
    caught = sum(o.result == "caught" for o in outcomes[1:])
    print(f"\nmutants: {caught} of {len(outcomes) - 1} caught" + ("" if ok else " -- FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
