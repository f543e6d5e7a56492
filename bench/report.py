"""Turn a run's JSON into the markdown table, the target check and the PNG chart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import ROOT

DOCS = ROOT / "docs" / "performance.md"
DOCS_CHART = ROOT / "docs" / "performance.png"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
HEADLINE = "relay-16x1"
"""The relay as users run it by default (16 shards, one process): the targets use it."""
CEILING = "ceiling"
SHARDED_BUILTIN = "stream-sharded"
"""Centrifugo's own redis_stream consumer, 16 streams x 1 worker: the latency reference."""
TARGET_RATE = 10_000
"""The medium load the latency targets are set at (msg/s)."""


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 100:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _per_message(backlog: dict[str, Any], seconds: float) -> str:
    return f"{seconds * 1e6 / max(1, backlog['messages']):.1f} µs"


def _latency(phase: dict[str, Any] | None) -> str:
    if phase is None:
        return "-"
    if "skipped" in phase:
        return "n/r"
    lat = phase.get("latency_ms")
    if not lat:
        return "failed"
    return f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.0f}"


def _by_rate(system: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((p for p in system.get("latency", []) if p.get("rate") == rate), None)


def _extra_rate(system: dict[str, Any], fixed: list[int]) -> dict[str, Any] | None:
    return next((p for p in system.get("latency", []) if p.get("rate") not in fixed), None)


def _has_mover(system: dict[str, Any]) -> bool:
    """A process of its own moves the messages (not Centrifugo, not the producer)."""
    return system["kind"] in ("naive", "relay", "outbox")


def _used_postgres(results: dict[str, Any]) -> bool:
    return bool(results["machine"].get("postgres")) and any(
        s.get("kind") in ("outbox", "postgresql") for s in results["systems"]
    )


def _conditions(results: dict[str, Any]) -> str:
    """Where and how the run was taken: the machine, the versions, the load, the sizes."""
    settings = results["settings"]
    m = results["machine"]
    return (
        f"Run {results['started']} on {m.get('cpu') or 'unknown CPU'}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB; Python {m['python']}, {m['centrifugo'] or 'Centrifugo'}, "
        f"Redis {m['redis']}"
        + (f", PostgreSQL {m['postgres']} (fsync off)" if _used_postgres(results) else "")
        + f"; load average {m['load_average']} at start, "
        f"{m.get('load_average_end')} at end. {settings['messages']:,} messages per "
        f"throughput phase, {settings['keys']:,} keys, {settings['payload_bytes']}-byte "
        f"payloads; latency phases of {settings['latency_seconds']:g} s"
        + (
            f"; every phase run {settings['repeat']} times, the median run reported."
            if settings.get("repeat", 1) > 1
            else "."
        )
    )


def render_markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    fixed = settings["rates"]
    lines = [
        _conditions(results),
        "",
        _row(
            ["system", "ordered", "accepted msg/s", "received msg/s", "inversions"]
            + [f"p50 / p99 / max ms @ {r:,}/s" for r in fixed]
            + ["p50 / p99 / max ms @ 80% of max", "mover CPU s", "mover peak RSS MB"]
            + ["Centrifugo CPU s"]
        ),
        "|---|---|--:|--:|--:|" + "--:|" * len(fixed) + "--:|--:|--:|--:|",
    ]
    for s in results["systems"]:
        if "error" in s:
            lines.append(f"| {s['label']} | | error: {s['error'][:80]} |")
            continue
        t = s["throughput"]
        extra = _extra_rate(s, fixed)
        extra_cell = (
            f"@ {extra['rate']:,}/s: {_latency(extra)}" if extra and "skipped" not in extra else "-"
        )
        cpu = t["cpu_seconds"]
        mover_cpu = _num(cpu.get("mover")) if _has_mover(s) else s["mover"]
        complete = "" if t.get("complete") else " (incomplete)"
        lines.append(
            _row(
                [
                    s["label"],
                    "yes" if s["ordered"] else "no",
                    f"{_num(t.get('accepted_per_s'))}{complete}",
                    _num(t.get("received_per_s")),
                    f"{t['inversions']:,}",
                ]
                + [_latency(_by_rate(s, r)) for r in fixed]
                + [extra_cell, mover_cpu]
                + [_num(s.get("mover_peak_rss_mb")) if _has_mover(s) else "-"]
                + [_num(cpu.get("centrifugo"))]
            )
        )
    lines += [
        "",
        "*accepted*: from the first enqueue to the last message accepted by Centrifugo; "
        "*received*: to the last message received by the WebSocket subscriber. "
        "*n/r*: not reachable (the offered rate is above what the system sustained). "
        "CPU seconds are for the throughput phase; peak RSS is the kernel's high-water mark "
        "(VmHWM) over the whole run.",
    ]
    lines += ["", *cpu_table(results)]
    lines += latency_table(results)
    backlog = results.get("backlog")
    if backlog:
        lines += [
            "",
            f"**Relay draining a backlog** of {backlog['messages']:,} messages "
            f"({backlog['shards']} shards, enqueued before the relay started): "
            + (
                f"error {backlog['error']}"
                if "error" in backlog
                else f"{_num(backlog['drain_per_s'])} msg/s, relay peak RSS "
                f"{backlog['relay_peak_rss_mb']} MB; CPU per message: relay "
                f"{_per_message(backlog, backlog['relay_cpu_seconds'])}, Centrifugo "
                f"{_per_message(backlog, backlog['server_cpu_seconds']['centrifugo'])}, Redis "
                f"{_per_message(backlog, backlog['server_cpu_seconds']['redis'])}"
                + ("" if backlog["complete"] else " (incomplete)")
            ),
        ]
    publisher = results.get("publisher")
    if publisher:
        lines += [
            "",
            f"**Publisher alone** (one process): `publish()` {_num(publisher['publish_per_s'])} "
            f"round trips/s ({publisher['round_trips_per_publish']} round trips per call); "
            f"`publish_many()` {_num(publisher['publish_many_envelopes_per_s'])} envelopes/s "
            f"(batches of {publisher['publish_many_batch']:,}).",
        ]
    validation = results.get("validation")
    if validation:
        v = validation
        lines += [
            "",
            f"**Validating entries** (the JSON profile, one process, {v['entry_bytes']}-byte "
            f"entries): the relay decodes and checks one in {v['relay_check_us']:.2f} µs "
            f"({v['relay_fields_only_us']:.2f} µs for the fields alone with `data` left raw; "
            f"the depth and integer screen is {v['profile_screen_us']:.2f} µs of it); the "
            f"publisher encodes and checks one in {v['publisher_check_us']:.2f} µs "
            f"({v['publisher_encode_only_us']:.2f} µs for msgspec's encoding alone).",
        ]
    targets = check_targets(results)
    if targets:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {met} |" for name, measured, met in targets]
    return "\n".join(lines) + "\n"


ROLES = ("mover", "producer", "postgres", "redis", "centrifugo", "subscriber")


def cpu_table(results: dict[str, Any]) -> list[str]:
    """CPU microseconds per message by role in the throughput phase: where the cores went."""
    lines = [
        "CPU µs per message in the throughput phase, by process (2 cores are shared by all):",
        "",
        "| system | " + " | ".join(ROLES) + " | total |",
        "|---|" + "--:|" * (len(ROLES) + 1),
    ]
    for s in results["systems"]:
        if "error" in s:
            continue
        t = s["throughput"]
        per = {role: (t["cpu_seconds"].get(role) or 0) * 1e6 / t["messages"] for role in ROLES}
        cells = [f"{per[role]:.1f}" if per[role] else "-" for role in ROLES]
        lines.append(f"| {s['label']} | " + " | ".join(cells) + f" | {sum(per.values()):.1f} |")
    return lines


def _mover_us(system: dict[str, Any], phase: dict[str, Any] | None) -> str:
    """The mover's CPU µs per message in ``phase``, or '-' when it has no mover."""
    if phase is None or not _has_mover(system) or "skipped" in phase:
        return "-"
    seconds = phase.get("cpu_seconds", {}).get("mover")
    if seconds is None:
        return "-"
    return f"{seconds * 1e6 / max(1, phase['messages']):.1f}"


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.1f}x"


def _percentile(phase: dict[str, Any] | None, which: str) -> float | None:
    if phase is None or "skipped" in phase:
        return None
    lat = phase.get("latency_ms")
    return lat.get(which) if lat else None


def latency_table(results: dict[str, Any]) -> list[str]:
    """p50 and p99 at each fixed rate as multiples of the ceiling's in the same run, and
    the mover's CPU per message at that rate (where a system's own work per batch shows)."""
    systems = {s["system"]: s for s in results["systems"] if "error" not in s}
    ceiling = systems.get(CEILING)
    if ceiling is None:
        return []
    fixed = results["settings"]["rates"]
    lines = [
        "",
        "Latency against the ceiling (p50 and p99 at each offered rate, as multiples of the "
        "ceiling's in the same run) and the mover's CPU µs per message at that rate:",
        "",
        _row(
            ["system"]
            + [f"p50 / p99 vs ceiling @ {r:,}/s" for r in fixed]
            + [f"mover CPU µs/msg @ {r:,}/s" for r in fixed]
        ),
        "|---|" + "--:|" * (2 * len(fixed)),
    ]
    for s in systems.values():
        cells = [s["label"]]
        for r in fixed:
            own, base = _by_rate(s, r), _by_rate(ceiling, r)
            p50 = _ratio(_percentile(own, "p50"), _percentile(base, "p50"))
            p99 = _ratio(_percentile(own, "p99"), _percentile(base, "p99"))
            cells.append(f"{p50} / {p99}")
        cells += [_mover_us(s, _by_rate(s, r)) for r in fixed]
        lines.append(_row(cells))
    return lines


def latency_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 13's targets for the relay at ``TARGET_RATE``, as ratios within this run."""
    systems = {s["system"]: s for s in results["systems"] if "error" not in s}
    relay = systems.get(HEADLINE)
    if relay is None:
        return []
    rows: list[tuple[str, str, str]] = []
    own = _by_rate(relay, TARGET_RATE)
    rate = f"{TARGET_RATE:,} msg/s"
    for other, which, goal, label in (
        (CEILING, "p99", 1.5, f"relay p99 ≤ 1.5x the ceiling's p99 at {rate}"),
        (SHARDED_BUILTIN, "p99", 1.0, f"relay p99 ≤ the built-in sharded consumer's at {rate}"),
        (CEILING, "p50", 2.0, f"relay p50 ≤ 2x the ceiling's p50 at {rate}"),
    ):
        base = systems.get(other)
        mine = _percentile(own, which)
        theirs = _percentile(_by_rate(base, TARGET_RATE), which) if base else None
        if mine is None or not theirs:
            continue
        ratio = mine / theirs
        rows.append(
            (
                label,
                f"{ratio:.2f}x ({mine:.1f} vs {theirs:.1f} ms)",
                "yes" if ratio <= goal else "**no**",
            )
        )
    backlog = results.get("backlog")
    if backlog and backlog.get("relay_cpu_seconds") and backlog.get("messages"):
        per = backlog["relay_cpu_seconds"] * 1e6 / backlog["messages"]
        where = "draining a backlog"
    else:
        t = relay["throughput"]
        seconds = t.get("cpu_seconds", {}).get("mover")
        per = seconds * 1e6 / t["messages"] if seconds else None
        where = "throughput phase"
    if per is not None:
        rows.append(
            (
                f"relay CPU ≤ 5 µs per message at full batches ({where})",
                f"{per:.1f} µs",
                "yes" if per <= 5 else "**no**",
            )
        )
    return rows


def check_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The issue's targets, as ratios within this run."""
    systems = {s["system"]: s for s in results["systems"] if "error" not in s}

    def rate(name: str) -> float | None:
        s = systems.get(name)
        return s["throughput"].get("accepted_per_s") if s else None

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("yes" if ok else "**no**")

    relay = rate(HEADLINE)
    rows: list[tuple[str, str, str]] = []
    for other, goal, label in (
        ("naive-ordered", 20.0, "relay ≥ 20x naive ordered worker"),
        ("stream-ordered", 1.0, "relay ≥ built-in redis_stream, ordered (aim 1.5x)"),
        ("ceiling", 0.6, "relay ≥ 60% of the ceiling (accepted, producer running)"),
    ):
        base = rate(other)
        if relay and base:
            ratio = relay / base
            rows.append((label, f"{ratio:.2f}x", verdict(ratio >= goal)))
    backlog = results.get("backlog")
    ceiling = rate("ceiling")
    if backlog and backlog.get("drain_per_s") and ceiling:
        ratio = backlog["drain_per_s"] / ceiling
        rows.append(
            (
                "(context) relay draining a backlog, no producer running, vs the ceiling",
                f"{ratio:.2f}x",
                "-",
            )
        )
    lat = _by_rate(systems[HEADLINE], 1000) if HEADLINE in systems else None
    if lat and lat.get("latency_ms"):
        p99 = lat["latency_ms"]["p99"]
        rows.append(("relay p99 ≤ 5 ms at 1,000 msg/s", f"{p99:.2f} ms", verdict(p99 <= 5)))
    rows += latency_targets(results)
    publisher = results.get("publisher")
    if publisher:
        many = publisher["publish_many_envelopes_per_s"]
        rows.append(("publish_many ≥ 100,000 envelopes/s", f"{many:,}", verdict(many >= 100_000)))
        per_call = publisher["round_trips_per_publish"]
        rows.append(
            ("publish() = one round trip", f"{per_call} round trips/call", verdict(per_call <= 1.0))
        )
    if backlog and backlog.get("relay_peak_rss_mb") is not None:
        rss = backlog["relay_peak_rss_mb"]
        rows.append(
            (
                f"relay peak RSS ≤ 100 MB draining {backlog['messages']:,}",
                f"{rss} MB",
                verdict(rss <= 100),
            )
        )
    return rows


FRESHNESS_BEGIN, FRESHNESS_END = "<!-- bench:freshness:begin -->", "<!-- bench:freshness:end -->"
EVERY_VERSION = "relay-16x1-all"
"""The headline relay with monotonic delivery off (``bench.harness.systems``)."""


def render_freshness_markdown(results: dict[str, Any]) -> str:
    """Monotonic delivery's cost (the default relay against freshness ``all``, one run)
    and the catch-up after an outage with and without latest-wins."""
    systems = {s["system"]: s for s in results["systems"] if "error" not in s}
    lines = [_conditions(results), ""]
    pair = [systems[n] for n in (HEADLINE, EVERY_VERSION) if n in systems]
    if pair:
        fixed = results["settings"]["rates"]
        lines += [
            _row(
                ["relay, 16 shards, 1 process", "accepted msg/s", "received msg/s", "inversions"]
                + [f"p50 / p99 / max ms @ {r:,}/s" for r in fixed]
                + ["CPU µs/msg: relay", "redis", "all processes"]
            ),
            "|---|--:|--:|--:|" + "--:|" * len(fixed) + "--:|--:|--:|",
        ]
        for s in pair:
            t = s["throughput"]
            per = {role: (t["cpu_seconds"].get(role) or 0) * 1e6 / t["messages"] for role in ROLES}
            mode = "freshness all" if s["system"] == EVERY_VERSION else "monotonic (default)"
            lines.append(
                _row(
                    [
                        mode,
                        _num(t.get("accepted_per_s"))
                        + ("" if t.get("complete") else " (incomplete)"),
                        _num(t.get("received_per_s")),
                        f"{_inversions(s):,}",
                    ]
                    + [_latency(_by_rate(s, r)) for r in fixed]
                    + [f"{per['mover']:.1f}", f"{per['redis']:.1f}", f"{sum(per.values()):.1f}"]
                )
            )
    catchup = results.get("catchup")
    if catchup:
        lines += [
            "",
            f"**Catching up after an outage**: {catchup['messages']:,} updates over "
            f"{catchup['keys']:,} keys queued while no relay ran, then one relay "
            f"({catchup['shards']} shards) starts; time from its start (including its "
            "start-up) until a WebSocket subscriber has every key's last version:",
            "",
            "| freshness | time to every key's latest | publications | superseded "
            "| inversions | relay CPU s | Centrifugo CPU s |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for mode, run in catchup["modes"].items():
            if "error" in run:
                lines.append(f"| {mode} | error: {run['error'][:80]} | | | | | |")
                continue
            seconds = run.get("seconds_to_latest")
            lines.append(
                _row(
                    [
                        f"`{mode}`",
                        "-" if seconds is None else f"{seconds:.2f} s",
                        _num(run.get("publications")),
                        _num(run.get("superseded")),
                        f"{run.get('inversions', 0):,}",
                        _num(run.get("relay_cpu_seconds")),
                        _num(run.get("server_cpu_seconds", {}).get("centrifugo")),
                    ]
                )
            )
    targets = check_freshness_targets(results)
    if targets:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {met} |" for name, measured, met in targets]
    return "\n".join(lines) + "\n"


def check_freshness_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 11's benchmark targets, as ratios within this run."""
    systems = {s["system"]: s for s in results["systems"] if "error" not in s}
    rows: list[tuple[str, str, str]] = []
    on, off = systems.get(HEADLINE), systems.get(EVERY_VERSION)
    if on and off:
        a = on["throughput"].get("accepted_per_s")
        b = off["throughput"].get("accepted_per_s")
        if a and b:
            rows.append(
                (
                    "monotonic delivery: throughput within 10% of freshness all",
                    f"{a / b:.2f}x ({a:,} vs {b:,} msg/s)",
                    "yes" if a >= 0.9 * b else "**no**",
                )
            )
    modes = (results.get("catchup") or {}).get("modes", {})
    latest, monotonic = modes.get("latest", {}), modes.get("monotonic", {})
    if latest.get("publications") and monotonic.get("publications"):
        keys = latest.get("keys_in_backlog") or results["catchup"]["keys"]
        rows.append(
            (
                "(context) latest-wins catch-up: publications per key",
                f"{latest['publications'] / keys:.2f} (monotonic: "
                f"{monotonic['publications'] / keys:,.0f})",
                "-",
            )
        )
    if latest.get("seconds_to_latest") and monotonic.get("seconds_to_latest"):
        rows.append(
            (
                "(context) latest-wins catch-up: time to every key's latest, vs monotonic",
                f"{latest['seconds_to_latest']:.2f} s vs {monotonic['seconds_to_latest']:.2f} s: "
                f"{monotonic['seconds_to_latest'] / latest['seconds_to_latest']:.1f}x faster",
                "-",
            )
        )
    return rows


def update_docs_freshness(markdown: str) -> None:
    """Put the freshness measurements into docs/performance.md (between their markers)."""
    _replace_block(
        FRESHNESS_BEGIN, FRESHNESS_END, f"{FRESHNESS_BEGIN}\n\n{markdown}\n{FRESHNESS_END}"
    )


OUTBOX_BEGIN, OUTBOX_END = "<!-- bench:outbox:begin -->", "<!-- bench:outbox:end -->"
OUTBOX, COMBINED, BUILTIN = "outbox", "outbox-combined", "postgresql"
"""The database systems (``bench.harness.systems.database_systems``)."""
OUTBOX_ROLES = ("producer", "postgres", "forwarder", "relay", "redis", "centrifugo", "subscriber")


def _inversions(system: dict[str, Any]) -> int:
    """Per-key order inversions over every phase of a system."""
    phases = [system.get("throughput", {}), *system.get("latency", [])]
    return sum(int(p.get("inversions", 0)) for p in phases)


def _roles_per_message(system: dict[str, Any], phase: dict[str, Any]) -> dict[str, float]:
    """CPU µs per message of ``phase`` by process, the mover split into forwarder and relay."""
    cpu = phase.get("cpu_seconds", {})
    count = max(1, phase.get("messages", 1))
    seconds: dict[str, float] = {
        role: float(cpu.get(role) or 0)
        for role in ("producer", "postgres", "redis", "centrifugo", "subscriber")
    }
    mover = float(cpu.get("mover") or 0)
    forwarder = float(cpu.get("forwarder") or 0)
    seconds["forwarder"] = forwarder
    seconds["relay"] = mover - forwarder
    return {role: value * 1e6 / count for role, value in seconds.items()}


def _cpu_total(system: dict[str, Any], phase: dict[str, Any] | None) -> str:
    """All processes' CPU µs per message in ``phase``."""
    if phase is None:
        return "-"
    return f"{sum(_roles_per_message(system, phase).values()):.1f}"


def _p99(system: dict[str, Any] | None, rate: int = 1000) -> float | None:
    phase = _by_rate(system, rate) if system else None
    lat = phase.get("latency_ms") if phase else None
    return float(lat["p99"]) if lat else None


def render_outbox_markdown(results: dict[str, Any]) -> str:
    """The write path through PostgreSQL: the outbox against the built-in consumer, with the
    direct publisher (relay, 16 shards) as the latency reference; their targets."""
    systems = {s["system"]: s for s in results["systems"] if "error" not in s}
    failed = [s for s in results["systems"] if "error" in s]
    names = [n for n in (OUTBOX, COMBINED, BUILTIN, HEADLINE) if n in systems]
    settings = results["settings"]
    lines = [
        _conditions(results)
        + f" Writers: {settings.get('writers', '-')} connections, flat out up to "
        f"{settings.get('transaction_messages', '-')} messages per transaction, paced one "
        "transaction per 1 ms tick (one message each at 1,000/s).",
        "",
        "| system | accepted msg/s | received msg/s | drain msg/s | inversions (all phases) "
        "| p50 / p99 / max ms @ 1,000/s | CPU µs/msg: flat out | @ 1,000/s | drain |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in names:
        s = systems[name]
        t = s["throughput"]
        slow = _by_rate(s, 1000)
        drain = s.get("drain")
        lines.append(
            _row(
                [
                    s["label"],
                    _num(t.get("accepted_per_s")) + ("" if t.get("complete") else " (incomplete)"),
                    _num(t.get("received_per_s")),
                    _num(drain.get("drain_per_s")) if drain else "-",
                    f"{_inversions(s):,}",
                    _latency(slow),
                    *(_cpu_total(s, phase) for phase in (t, slow, drain)),
                ]
            )
        )
    lines += [f"| {s['label']} | error: {s['error'][:80]} | | | | | | | |" for s in failed]
    lines += [
        "",
        "CPU µs per message by process, flat out (throughput phase) / at 1,000 msg/s; "
        "*producer* is the writers (the publisher for the direct relay), *postgres* the "
        "server and all its backends:",
        "",
        "| system | " + " | ".join(OUTBOX_ROLES) + " |",
        "|---|" + "--:|" * len(OUTBOX_ROLES),
    ]
    for name in names:
        s = systems[name]
        flat = _roles_per_message(s, s["throughput"])
        slow_phase = _by_rate(s, 1000)
        slow = _roles_per_message(s, slow_phase) if slow_phase else {}
        cells = []
        for role in OUTBOX_ROLES:
            if role == "forwarder" and s.get("kind") == "outbox" and not flat.get(role):
                cells.append("(in relay)")
                continue
            a, b = flat.get(role, 0.0), slow.get(role, 0.0)
            cells.append(f"{a:.1f} / {b:.1f}" if a or b else "-")
        lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    targets = check_outbox_targets(results)
    if targets:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {met} |" for name, measured, met in targets]
    return "\n".join(lines) + "\n"


def check_outbox_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 12's benchmark targets, as ratios within this run."""
    systems = {s["system"]: s for s in results["systems"] if "error" not in s}

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**no**"

    rows: list[tuple[str, str, str]] = []
    ours, builtin = systems.get(OUTBOX), systems.get(BUILTIN)
    if ours and builtin:
        a = ours["throughput"].get("accepted_per_s")
        b = builtin["throughput"].get("accepted_per_s")
        if a and b:
            ordered = _inversions(ours) == 0
            rows.append(
                (
                    "outbox ≥ 3x the built-in postgresql consumer's throughput, per-key order kept",
                    f"{a / b:.2f}x, {_inversions(ours)} inversions",
                    verdict(a / b >= 3 and ordered),
                )
            )
        rows.append(
            (
                "per-key order: inversions, outbox / built-in consumer",
                f"{_inversions(ours)} / {_inversions(builtin)}",
                verdict(_inversions(ours) == 0 and _inversions(builtin) == 0),
            )
        )
    drains = [(s or {}).get("drain", {}).get("drain_per_s") for s in (ours, builtin)]
    if drains[0] and drains[1]:
        rows.append(
            (
                "(context) movers alone, draining a committed backlog: outbox vs built-in",
                f"{drains[0]:,} vs {drains[1]:,} msg/s: {drains[0] / drains[1]:.2f}x",
                "-",
            )
        )
    direct = systems.get(HEADLINE)
    mine, theirs = _p99(ours), _p99(direct)
    if mine is not None and theirs:
        rows.append(
            (
                "outbox p99 at 1,000 msg/s ≤ 2x the direct Redis publisher's (relay, 16 shards)",
                f"{mine:.1f} ms vs {theirs:.1f} ms: {mine / theirs:.1f}x",
                verdict(mine <= 2 * theirs),
            )
        )
    builtin_p99 = _p99(builtin)
    if mine is not None and builtin_p99:
        rows.append(
            (
                "(context) outbox p99 at 1,000 msg/s vs the built-in consumer's",
                f"{mine:.1f} ms vs {builtin_p99:.1f} ms: {mine / builtin_p99:.1f}x",
                "-",
            )
        )
    combined = systems.get(COMBINED)
    if ours and combined:
        a = combined["throughput"].get("accepted_per_s")
        b = ours["throughput"].get("accepted_per_s")
        if a and b:
            rows.append(
                (
                    "(context) forwarder inside the relay process vs its own process: throughput",
                    f"{a / b:.2f}x",
                    "-",
                )
            )
        slow_a, slow_b = _by_rate(combined, 1000), _by_rate(ours, 1000)
        if slow_a and slow_b:
            cpu_a = sum(_roles_per_message(combined, slow_a).values())
            cpu_b = sum(_roles_per_message(ours, slow_b).values())
            rows.append(
                (
                    "(context) the same at 1,000 msg/s: p99, CPU per message",
                    f"{_p99(combined) or 0:.1f} vs {mine or 0:.1f} ms; "
                    f"{cpu_a:.0f} vs {cpu_b:.0f} µs",
                    "-",
                )
            )
    return rows


def update_docs_outbox(markdown: str) -> None:
    """Put the outbox comparison into docs/performance.md (between its markers)."""
    _replace_block(OUTBOX_BEGIN, OUTBOX_END, f"{OUTBOX_BEGIN}\n\n{markdown}\n{OUTBOX_END}")


def _replace_block(begin: str, end: str, block: str) -> None:
    text = DOCS.read_text()
    if begin not in text or end not in text:
        raise RuntimeError(f"{DOCS} lacks the {begin} / {end} markers")
    pattern = re.escape(begin) + ".*?" + re.escape(end)
    DOCS.write_text(re.sub(pattern, lambda _: block, text, flags=re.S))


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Throughput by system, and latency percentiles at each fixed rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in results["systems"] if "error" not in s]
    labels = [s["label"] for s in systems]
    rates = results["settings"]["rates"]
    fig, axes = plt.subplots(
        1,
        1 + len(rates),
        figsize=(6 + 4.5 * len(rates), 0.45 * len(systems) + 2.5),
        sharey=True,
        squeeze=False,
        gridspec_kw={"width_ratios": [1.4] + [1] * len(rates)},
    )
    positions = list(range(len(systems)))[::-1]
    axes = axes[0]
    ax = axes[0]
    accepted = [s["throughput"].get("accepted_per_s") or 0 for s in systems]
    received = [s["throughput"].get("received_per_s") or 0 for s in systems]
    ax.barh([p + 0.2 for p in positions], accepted, height=0.4, label="to accepted")
    ax.barh([p - 0.2 for p in positions], received, height=0.4, label="to subscriber")
    ax.set_xscale("log")
    ax.set_yticks(positions, labels)
    ax.set_xlabel("messages/s (log scale)")
    ax.set_title("Throughput")
    ax.set_xlim(left=min([v for v in accepted + received if v] or [1000]) / 2)
    ax.legend(loc="upper right", fontsize=8)
    for p, value in zip(positions, accepted, strict=True):
        if value:
            ax.text(value, p + 0.2, f" {value:,.0f}", va="center", fontsize=7)
    for ax, rate in zip(axes[1:], rates, strict=True):
        for offset, (name, color) in zip(
            (0.27, 0, -0.27),
            (("p50", "tab:green"), ("p99", "tab:orange"), ("max", "tab:red")),
            strict=True,
        ):
            values = []
            for s in systems:
                phase = _by_rate(s, rate)
                lat = phase.get("latency_ms") if phase else None
                values.append(lat[name] if lat else 0)
            ax.barh([p + offset for p in positions], values, height=0.27, label=name, color=color)
        ax.set_xscale("log")
        for p, s in zip(positions, systems, strict=True):
            phase = _by_rate(s, rate)
            if phase is None or "skipped" in phase:
                ax.text(
                    0.02,
                    p,
                    "not reachable",
                    transform=ax.get_yaxis_transform(),
                    va="center",
                    fontsize=8,
                    color="gray",
                )
        ax.set_xlabel("ms, enqueue → subscriber (log scale)")
        ax.set_title(f"Latency at {rate:,} msg/s")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(
        f"centrifugo-async benchmark, {results['started']} ({results['machine']['cores']} cores)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(markdown: str, chart: Path) -> None:
    """Put the latest table and chart into docs/performance.md (between the markers)."""
    block = f"{BEGIN}\n\n{markdown}\n![benchmark chart](performance.png)\n\n{END}"
    _replace_block(BEGIN, END, block)
    DOCS_CHART.write_bytes(chart.read_bytes())


PROFILE_BEGIN, PROFILE_END = "<!-- profile:begin -->", "<!-- profile:end -->"


def update_docs_profile(summary: Path, started: str, top: int = 14) -> None:
    """Put the top of a py-spy summary (relay draining a backlog) into docs/performance.md."""
    if not summary.exists():
        return
    text = summary.read_text()
    by_module, _, rest = text.partition("\nself %   function\n")
    functions = rest.split("\n\n")[0].splitlines()[:top]
    own = [*by_module.splitlines(), "", "self %   function", *functions]
    block = (
        f"{PROFILE_BEGIN}\n\nRun {started}, relay (16 shards) draining the backlog:\n\n"
        "```text\n" + "\n".join(own) + "\n```\n\n" + PROFILE_END
    )
    text = DOCS.read_text()
    pattern = re.escape(PROFILE_BEGIN) + ".*?" + re.escape(PROFILE_END)
    DOCS.write_text(re.sub(pattern, lambda _: block, text, flags=re.S))
