"""``python -m tests.chaos``: run the chaos harness at any size (see harness.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .harness import ChaosConfig, run_chaos, write_report


def main() -> None:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--messages", type=int, default=defaults.messages)
    parser.add_argument("--keys", type=int, default=defaults.keys)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--freshness",
        default=defaults.freshness,
        help="the relays' --freshness (default: none given, their default mode: monotonic)",
    )
    parser.add_argument("--report", default="chaos-report.json")
    args = parser.parse_args()
    config = ChaosConfig(
        messages=args.messages,
        keys=args.keys,
        seconds=args.seconds,
        seed=args.seed,
        freshness=args.freshness,
    )
    report, content = asyncio.run(run_chaos(config))
    write_report(args.report, content)
    print(report.summary())
    print(f"report: {args.report}")
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
