"""``python -m bench``: the whole comparison, written as JSON, a markdown table and a chart.

Full run (about 17 minutes on 2 cores): every system with 100,000 messages,
latency at 1,000/s, 10,000/s and 80% of each system's maximum, the relay
draining a backlog of 1,000,000, and the publisher alone. Writes
``bench/results/run-<time>.json``, ``bench/results/latest.{json,md,png}`` and
refreshes the table and chart in ``docs/performance.md``.

``--suite freshness`` runs only the relay with monotonic delivery (its default)
against the relay with freshness ``all`` (throughput and latency, one run: the
cost of monotonic delivery) and the catch-up after an outage with and without
latest-wins; it writes ``bench/results/latest-freshness.{json,md}`` and
refreshes only the freshness section of ``docs/performance.md``.

``--suite outbox`` runs only the write path through PostgreSQL (the outbox,
the outbox with the forwarder inside the relay, Centrifugo's built-in
postgresql consumer) and the direct publisher's relay as the latency
reference, writes ``bench/results/latest-outbox.{json,md}`` and refreshes only
the outbox section of ``docs/performance.md`` (about 3 minutes). A full run
refreshes both sections.

``--suite scale`` runs the relay beyond one machine's worth of servers: one
or two Centrifugo nodes on the Redis engine, the queues on a Redis or a
3-node Redis Cluster, one or two relays (``bench/harness/scale.py``); it
writes ``bench/results/latest-scale.{json,md}`` and refreshes the results
section of ``docs/scaling.md`` (about 2 minutes).

``--quick`` is the smoke test the suite runs: a few thousand messages per
system, no chart, no docs update; it checks that every system delivered every
message and says nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from bench import ROOT
from bench.harness import Settings, System, all_systems, run_all
from bench.harness.scale import render_scale_markdown, run_scale, update_docs_scale
from bench.harness.systems import EVERY_VERSION_RELAY, database_systems
from bench.procstats import machine
from bench.report import (
    HEADLINE,
    render_freshness_markdown,
    render_markdown,
    render_outbox_markdown,
    update_docs,
    update_docs_freshness,
    update_docs_outbox,
    update_docs_profile,
    write_chart,
)
from bench.workload import Workload
from devstack import find_centrifugo, find_postgres_bindir

QUICK = Settings(
    messages=2_000,
    rates=(1000,),
    fraction_of_max=None,
    latency_seconds=0.5,
    backlog=5_000,
    publish_calls=500,
    publish_many_envelopes=5_000,
    balanced=False,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: small counts")
    parser.add_argument(
        "--suite",
        choices=["all", "outbox", "freshness", "scale"],
        default="all",
        help="outbox: only the PostgreSQL write paths and the direct relay (no backlog, "
        "no publisher-alone phase); freshness: only the relay with and without monotonic "
        "delivery, and the catch-up with and without latest-wins; scale: two Centrifugo "
        "nodes, a Redis Cluster and two relays (docs/scaling.md)",
    )
    parser.add_argument("--messages", type=int, help="messages per throughput phase")
    parser.add_argument("--latency-seconds", type=float, help="length of each latency phase")
    parser.add_argument("--rates", type=int, nargs="*", help="fixed offered rates (msg/s)")
    parser.add_argument("--backlog", type=int, help="relay backlog size for the RSS check")
    parser.add_argument(
        "--repeat", type=int, help="runs of each phase, the median is reported (default 1)"
    )
    parser.add_argument(
        "--writers", type=int, help="writer connections of the database systems (default 4)"
    )
    parser.add_argument(
        "--transaction-messages",
        type=int,
        help="most messages per writer transaction, flat out (default 100)",
    )
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument(
        "--systems",
        nargs="*",
        help="only these systems (names as in the JSON, e.g. relay-16x1); with --suite scale, "
        "these layouts (e.g. 2n-1r)",
    )
    parser.add_argument("--no-backlog", action="store_true")
    parser.add_argument("--no-catchup", action="store_true")
    parser.add_argument("--no-publisher", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refresh docs/performance.md (default: on for full runs with every system)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the movers (raw stacks)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    changes: dict[str, Any] = {
        "workload": Workload(args.keys, args.payload_bytes),
    }
    if args.messages:
        changes["messages"] = args.messages
    if args.latency_seconds:
        changes["latency_seconds"] = args.latency_seconds
    if args.rates is not None:
        changes["rates"] = tuple(args.rates)
    if args.repeat:
        changes["repeat"] = args.repeat
    if args.backlog is not None:
        changes["backlog"] = args.backlog
    if args.writers:
        changes["writers"] = args.writers
    if args.transaction_messages:
        changes["transaction_messages"] = args.transaction_messages
    if args.profile:
        changes["profile_dir"] = args.out / "profiles"
    return attrs.evolve(base, **changes)


def versions() -> dict[str, str]:
    def output(*command: str) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
        except OSError:
            return ""

    redis_server = shutil.which("redis-server") or "redis-server"
    found = {
        "python": platform.python_version(),
        "centrifugo": output(find_centrifugo(), "version").strip(),
        "redis": output(redis_server, "--version").split(" v=")[-1].split()[0],
    }
    try:
        postgres = output(str(find_postgres_bindir() / "postgres"), "--version")
        found["postgres"] = (re.findall(r"\(PostgreSQL\) (\S+)", postgres) or [""])[0]
    except FileNotFoundError:
        pass
    return found


def suite_systems(suite: str) -> list[System]:
    """The systems a suite runs: everything, or the database paths and the direct relay."""
    systems = all_systems()
    if suite == "outbox":
        names = {s.name for s in database_systems()} | {HEADLINE}
        systems = [s for s in systems if s.name in names]
    elif suite == "freshness":
        systems = [s for s in systems if s.name in (HEADLINE, EVERY_VERSION_RELAY)]
    return systems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    if args.suite == "scale":
        return run_scale_suite(args, settings)
    systems = suite_systems(args.suite)
    outbox_suite = args.suite == "outbox"
    freshness_suite = args.suite == "freshness"
    if args.systems:
        unknown = set(args.systems) - {s.name for s in systems}
        if unknown:
            raise SystemExit(
                f"unknown systems {sorted(unknown)}; known: {[s.name for s in systems]}"
            )
        systems = [s for s in systems if s.name in args.systems]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    started = datetime.now(UTC)
    begin = time.monotonic()
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "messages": settings.messages,
            "rates": list(settings.rates),
            "fraction_of_max": settings.fraction_of_max,
            "latency_seconds": settings.latency_seconds,
            "repeat": settings.repeat,
            "backlog": settings.backlog,
            "keys": settings.workload.keys,
            "payload_bytes": settings.workload.payload_bytes,
            "writers": settings.writers,
            "transaction_messages": settings.transaction_messages,
        },
        "machine": {**machine(), **versions()},
    }
    results.update(
        run_all(
            systems,
            settings,
            logs,
            backlog=not (args.no_backlog or outbox_suite or freshness_suite),
            publisher=not (args.no_publisher or outbox_suite or freshness_suite),
            catchup=not (args.no_catchup or outbox_suite),
        )
    )
    results["machine"]["load_average_end"] = machine()["load_average"]
    results["wall_seconds"] = round(time.monotonic() - begin, 1)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(results, indent=2) + "\n"
    (out / f"run-{stamp}.json").write_text(text)
    database_names = {s.name for s in database_systems()}
    outbox_markdown = None
    if any(s["system"] in database_names for s in results["systems"]):
        outbox_markdown = render_outbox_markdown(results)
    full = not args.quick and not args.systems
    docs = args.docs if args.docs is not None else full
    freshness_markdown = None
    if any(s["system"] == EVERY_VERSION_RELAY for s in results["systems"]) or "catchup" in results:
        freshness_markdown = render_freshness_markdown(results)
    if outbox_suite:
        (out / "latest-outbox.json").write_text(text)
    elif freshness_suite:
        (out / "latest-freshness.json").write_text(text)
    else:
        (out / "latest.json").write_text(text)
        markdown = render_markdown(results)
        (out / "latest.md").write_text(markdown)
        print(markdown)
        if not args.quick:
            write_chart(results, out / "latest.png")
        if docs:
            update_docs(markdown, out / "latest.png")
    if outbox_markdown is not None:
        (out / "latest-outbox.md").write_text(outbox_markdown)
        print(outbox_markdown)
        if docs:
            update_docs_outbox(outbox_markdown)
    if freshness_markdown is not None:
        (out / "latest-freshness.md").write_text(freshness_markdown)
        print(freshness_markdown)
        if docs:
            update_docs_freshness(freshness_markdown)
    if args.profile and args.docs is not False:
        update_docs_profile(out / "profiles" / "backlog.summary.txt", results["started"])
    failures = [s["system"] for s in results["systems"] if "error" in s or not _complete(s)]
    failures += [
        f"catch-up ({mode})"
        for mode, run in results.get("catchup", {}).get("modes", {}).items()
        if "error" in run or not run.get("complete")
    ]
    if failures:
        print(f"incomplete: {failures}", file=sys.stderr)
        return 1
    return 0


def run_scale_suite(args: argparse.Namespace, settings: Settings) -> int:
    """``--suite scale``: every layout, the JSON and markdown, the docs section."""
    out: Path = args.out
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    begin = time.monotonic()
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "messages": settings.messages,
            "repeat": settings.repeat,
            "keys": settings.workload.keys,
            "payload_bytes": settings.workload.payload_bytes,
        },
        "machine": {**machine(), **versions()},
    }
    results.update(run_scale(settings, logs, args.systems))
    results["machine"]["load_average_end"] = machine()["load_average"]
    results["wall_seconds"] = round(time.monotonic() - begin, 1)
    text = json.dumps(results, indent=2) + "\n"
    (out / f"run-scale-{started.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    (out / "latest-scale.json").write_text(text)
    markdown = render_scale_markdown(results)
    (out / "latest-scale.md").write_text(markdown)
    print(markdown)
    if args.docs if args.docs is not None else not (args.quick or args.systems):
        update_docs_scale(markdown)
    failures = [
        layout["layout"]
        for layout in results["layouts"]
        if "error" in layout
        or not all(layout[phase].get("complete") for phase in ("throughput", "drain"))
    ]
    if failures:
        print(f"incomplete: {failures}", file=sys.stderr)
        return 1
    return 0


def _complete(system: dict[str, Any]) -> bool:
    phases = [system.get("throughput", {}), *system.get("latency", [])]
    if "drain" in system:
        phases.append(system["drain"])
    return all(p.get("complete", "skipped" in p) for p in phases)


if __name__ == "__main__":
    sys.exit(main())
