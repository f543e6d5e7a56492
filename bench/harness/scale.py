"""``python -m bench --suite scale``: the relay beyond one Redis and one Centrifugo.

Each layout runs on fresh servers: the queues on one Redis or on a 3-node
Redis Cluster, one or two Centrifugo nodes on the Redis engine (one engine
Redis, shared), one or two relay processes posting to every node
(``--api-url`` once per node). The producer enqueues ``messages`` flat out
while the relays run; a WebSocket subscriber connected to the **first** node
counts what arrives and the per-key order inversions, so the publications the
other node accepted are seen through the engine.

Per layout it reports the accepted and received throughput, inversions,
duplicates, how many publications each node accepted (its own Prometheus
counter) and the CPU each process spent per message: producer, relays, queue
Redis (every cluster node), Centrifugo (every node), engine Redis, subscriber.
Those CPU costs are the inputs of the capacity model in ``docs/scaling.md``.
Writes ``bench/results/latest-scale.{json,md}`` and refreshes the marked
section of ``docs/scaling.md``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis
import redis.cluster

from bench import ROOT
from bench.procstats import cpu_seconds
from bench.workload import now_us
from centrifugo_async import Keyspace
from devstack import (
    DEV_API_KEY,
    CentrifugoServer,
    ChildProcess,
    RedisCluster,
    RedisServer,
    RelayProcess,
    stop_together,
)

from .phases import repeated
from .roles import bench_process
from .settings import Settings
from .stack import QUEUE_MAX_SIZE

__all__ = ["LAYOUTS", "Layout", "render_scale_markdown", "run_scale", "update_docs_scale"]

SCALING_DOC = ROOT / "docs" / "scaling.md"
DOC_START = "<!-- scale results: bench/harness/scale.py writes this section -->"
DOC_END = "<!-- end of scale results -->"
LEASES_TIMEOUT = 60.0
ROLES = ("producer", "relay", "queue_redis", "centrifugo", "engine_redis", "subscriber")
"""The processes whose CPU is accounted, in the order the table shows them."""


@attrs.frozen
class Layout:
    """Where the queues live, how many Centrifugo nodes and relay processes."""

    name: str
    label: str
    nodes: int
    relays: int
    cluster: bool
    shards: int = 16


LAYOUTS = (
    Layout("1n-1r", "Redis, 1 Centrifugo node, 1 relay", 1, 1, False),
    Layout("2n-1r", "Redis, 2 Centrifugo nodes, 1 relay", 2, 1, False),
    Layout("2n-2r", "Redis, 2 Centrifugo nodes, 2 relays", 2, 2, False),
    Layout("cluster-2n-1r", "Redis Cluster (3), 2 Centrifugo nodes, 1 relay", 2, 1, True),
    Layout("cluster-2n-2r", "Redis Cluster (3), 2 Centrifugo nodes, 2 relays", 2, 2, True),
)


class ScaleStack:
    """The servers of one layout: queue Redis (or Cluster), engine Redis, Centrifugo nodes."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        with contextlib.ExitStack() as starting:
            self.queue: RedisServer | RedisCluster = starting.enter_context(
                RedisCluster(nodes=3) if layout.cluster else RedisServer()
            )
            self.engine = starting.enter_context(RedisServer())
            extra = {
                "client": {"queue_max_size": QUEUE_MAX_SIZE},
                "log": {"level": "warn"},
                "engine": {"type": "redis", "redis": {"address": [self.engine.url]}},
            }
            self.nodes = [
                starting.enter_context(CentrifugoServer(extra_config=extra))
                for _ in range(layout.nodes)
            ]
            self._services = starting.pop_all()
        first = self.nodes[0]
        self.http = http.client.HTTPConnection("127.0.0.1", first.port, timeout=5.0)

    @property
    def queue_url(self) -> str:
        return self.queue.url

    def relay(self) -> RelayProcess:
        """A relay process on the queues, posting to every node (not started yet)."""
        cluster = ["--redis-cluster"] if self.layout.cluster else []
        return RelayProcess(
            self.queue_url,
            ",".join(node.api_url for node in self.nodes),
            DEV_API_KEY,
            "--shards",
            str(self.layout.shards),
            *cluster,
        )

    def pids(self) -> dict[str, list[int]]:
        queue = self.queue.nodes if isinstance(self.queue, RedisCluster) else [self.queue]
        return {
            "queue_redis": [p for node in queue if (p := node.pid) is not None],
            "engine_redis": [p for p in [self.engine.pid] if p is not None],
            "centrifugo": [p for node in self.nodes if (p := node.pid) is not None],
        }

    def cpu_seconds(self) -> dict[str, float]:
        return {role: cpu_seconds(pids) for role, pids in self.pids().items()}

    def accepted(self, channel: str) -> int:
        """The channel's top offset in the engine (asked of the first node)."""
        body = json.dumps({"channel": channel, "limit": 0})
        headers = {"X-API-Key": DEV_API_KEY, "Content-Type": "application/json"}
        try:
            self.http.request("POST", "/api/history", body, headers)
            reply = json.loads(self.http.getresponse().read())
        except (OSError, http.client.HTTPException):
            self.http.close()
            return 0
        return int(reply.get("result", {}).get("offset", 0))

    def publishes(self) -> list[int]:
        """Publications each node accepted through its server API so far."""
        counts = []
        for node in self.nodes:
            url = f"http://127.0.0.1:{node.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            counts.append(
                sum(
                    int(float(line.rsplit(" ", 1)[1]))
                    for line in text.splitlines()
                    if line.startswith("centrifugo_api_command_duration_seconds_count{")
                    and 'method="publish"' in line
                )
            )
        return counts

    def wait_for_leases(self, relays: Sequence[ChildProcess]) -> None:
        """Every shard's lease held, the relays' shares equal (±1)."""
        shards = self.layout.shards
        leases = [keys.lease for keys in Keyspace(shards=shards).all_shards()]
        client: Any = (
            redis.cluster.RedisCluster.from_url(self.queue_url)
            if self.layout.cluster
            else redis.Redis.from_url(self.queue_url)
        )
        deadline = time.monotonic() + LEASES_TIMEOUT
        try:
            while True:
                held: dict[bytes, int] = {}
                for lease in leases:
                    value = client.get(lease)
                    if isinstance(value, bytes):
                        owner = value.split(b"#")[0]
                        held[owner] = held.get(owner, 0) + 1
                shares = list(held.values())
                if (
                    sum(shares) == shards
                    and len(shares) == len(relays)
                    and max(shares) - min(shares) <= 1
                ):
                    return
                if time.monotonic() > deadline:
                    logs = "\n".join(r.log()[-2000:] for r in relays)
                    raise RuntimeError(f"relays did not share the leases in time:\n{logs}")
                time.sleep(0.05)
        finally:
            client.close()

    def close(self) -> None:
        self.http.close()
        self._services.close()


@contextlib.contextmanager
def _running(processes: list[ChildProcess]) -> Iterator[None]:
    try:
        yield
    finally:
        stop_together(processes)
        for process in processes:
            process.close()


def run_layout(layout: Layout, settings: Settings, logs: Path) -> dict[str, Any]:
    """One layout on fresh servers: ``settings.repeat`` flat-out runs, the median kept."""
    result: dict[str, Any] = {"layout": layout.name, "label": layout.label, **attrs.asdict(layout)}
    started = time.monotonic()
    stack: ScaleStack | None = None
    try:
        stack = ScaleStack(layout)
        relays: list[ChildProcess] = [stack.relay() for _ in range(layout.relays)]
        with _running(relays), tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            for relay in relays:
                relay.start()
            stack.wait_for_leases(relays)
            running = stack

            def once(index: int) -> dict[str, Any]:
                return _throughput(running, relays, settings, Path(tmp), index)

            def drained(index: int) -> dict[str, Any]:
                return _throughput(running, relays, settings, Path(tmp), index, backlog=True)

            result["throughput"] = repeated(settings, lambda r: r.get("accepted_per_s", 0), once)
            result["drain"] = repeated(settings, lambda r: r.get("accepted_per_s", 0), drained)
            for index, relay in enumerate(relays):
                with contextlib.suppress(OSError):
                    (logs / f"scale-{layout.name}-relay{index}.log").write_text(relay.log())
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if stack is not None:
            stack.close()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def _throughput(
    stack: ScaleStack,
    relays: Sequence[ChildProcess],
    settings: Settings,
    workdir: Path,
    index: int,
    *,
    backlog: bool = False,
) -> dict[str, Any]:
    """``messages`` through the layout: enqueued while the relays run, or (``backlog``)
    enqueued while they are stopped (SIGSTOP) and drained at full batches once they
    continue; the clock and the CPU accounting then start at the SIGCONT."""
    layout = stack.layout
    count = settings.messages
    timeout = max(60.0, count / 500)
    channel = f"obj:{'drain' if backlog else 'scale'}-{index}"
    sub_out, prod_out = workdir / f"{channel}-sub.json", workdir / f"{channel}-prod.json"
    relay_pids = [pid for relay in relays if (pid := relay.pid) is not None]

    def cpu_now() -> dict[str, float]:
        return {"relay": cpu_seconds(relay_pids), **stack.cpu_seconds()}

    sub = bench_process(
        "bench.subscriber",
        "--ws-url",
        stack.nodes[0].ws_url,
        "--channel",
        channel,
        "--expected",
        str(count),
        "--timeout",
        str(timeout),
        "--out",
        str(sub_out),
        log_path=workdir / f"{channel}-sub.log",
        ready_line="ready",
    )
    w = settings.workload
    cluster = ["--redis-cluster"] if layout.cluster else []
    producer = bench_process(
        "bench.produce",
        "relay",
        "--count",
        str(count),
        "--channel",
        channel,
        "--keys",
        str(w.keys),
        "--payload-bytes",
        str(w.payload_bytes),
        "--redis-url",
        stack.queue_url,
        "--shards",
        str(layout.shards),
        *cluster,
        "--out",
        str(prod_out),
        log_path=workdir / f"{channel}-prod.log",
    )
    accepted, accepted_us = 0, 0
    with _running([sub]):
        sub.start()
        publishes_before = stack.publishes()
        if backlog:
            for relay in relays:
                relay.signal(signal.SIGSTOP)
            try:
                with _running([producer]):
                    producer.start()
                    producer.finish(timeout)
            finally:
                for relay in relays:
                    relay.signal(signal.SIGCONT)
        cpu_before = cpu_now()
        resumed_us = now_us()
        with _running([] if backlog else [producer]):
            if not backlog:
                producer.start()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                accepted = stack.accepted(channel)
                if accepted >= count:
                    accepted_us = now_us()
                    break
                if not backlog and producer.poll() not in (None, 0):
                    break
                time.sleep(0.005)
            cpu_after = cpu_now()
            if not backlog:
                producer.finish(max(1.0, deadline - time.monotonic()))
        sub.finish(timeout + 10)
        publishes = [a - b for a, b in zip(stack.publishes(), publishes_before, strict=True)]
    produced = json.loads(prod_out.read_text()) if prod_out.exists() else {}
    seen = json.loads(sub_out.read_text()) if sub_out.exists() else {}
    first_us = resumed_us if backlog else produced.get("first_enqueue_us", 0)
    cpu = {role: round(cpu_after[role] - cpu_before[role], 3) for role in cpu_before}
    if not backlog:
        cpu["producer"] = produced.get("cpu_seconds")
    cpu["subscriber"] = seen.get("cpu_seconds")
    result: dict[str, Any] = {
        "channel": channel,
        "messages": count,
        "accepted": accepted,
        "received": seen.get("received", 0),
        "unique_received": seen.get("unique", 0),
        "duplicates": seen.get("duplicates", 0),
        "inversions": seen.get("inversions", 0),
        "complete": accepted >= count and seen.get("unique", 0) >= count,
        "problems": seen.get("problems", []) + ([] if produced else ["producer wrote nothing"]),
        "publishes_per_node": publishes,
        "cpu_seconds": cpu,
        "cpu_us_per_message": {
            role: round(seconds * 1e6 / count, 1) for role, seconds in cpu.items() if seconds
        },
    }
    if first_us and accepted_us:
        result["accepted_per_s"] = round(count / ((accepted_us - first_us) / 1e6))
    last_receive_us = seen.get("last_receive_us", 0)
    if first_us and last_receive_us and result["complete"]:
        result["received_per_s"] = round(count / ((last_receive_us - first_us) / 1e6))
    return result


def run_scale(settings: Settings, logs: Path, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every layout (or those ``names``) in turn, each on fresh servers."""
    unknown = set(names or ()) - {layout.name for layout in LAYOUTS}
    if unknown:
        raise SystemExit(f"unknown layouts {sorted(unknown)}; known: {[x.name for x in LAYOUTS]}")
    chosen = [layout for layout in LAYOUTS if not names or layout.name in names]
    return {"layouts": [run_layout(layout, settings, logs) for layout in chosen]}


def render_scale_markdown(results: dict[str, Any]) -> str:
    """Two tables, producer running and backlog drained: throughput, order, spread over
    the nodes, CPU per message of every process."""
    settings = results["settings"]
    machine = results["machine"]
    load = machine.get("load_average", ["?"])[0], machine.get("load_average_end", ["?"])[0]
    repeat = settings.get("repeat", 1)
    runs = f", the median of {repeat} runs by accepted msg/s" if repeat > 1 else ""
    lines = [
        f"Run {results['started']} on {machine.get('cores')} cores ({machine.get('cpu')}), "
        f"{machine.get('centrifugo', 'Centrifugo ?')}, Redis {machine.get('redis', '?')}, "
        f"load average {load[0]} at the start and {load[1]} at the end: "
        f"{settings['messages']:,} messages over {settings['keys']:,} keys, "
        f"{settings['payload_bytes']} B payloads, 16 shards{runs} "
        f"(`python -m bench --suite scale`).",
    ]
    for phase, title in (
        ("throughput", "Producer running (enqueued while the relays move them)"),
        ("drain", "Backlog drained (enqueued while the relays were stopped; full batches)"),
    ):
        lines += ["", f"**{title}**", "", *_table(results["layouts"], phase)]
    return "\n".join(lines) + "\n"


def _table(layouts: Sequence[dict[str, Any]], phase: str) -> list[str]:
    rows = [
        "| layout | accepted msg/s | received msg/s | inversions | lost | duplicates "
        "| publications per node | CPU µs/msg: producer | relays | queue Redis "
        "| Centrifugo (all nodes) | engine Redis | subscriber |",
        "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for layout in layouts:
        if "error" in layout or phase not in layout:
            problem = layout.get("error", "not run")
            rows.append(f"| {layout['label']} | error: {problem} |" + " |" * 11)
            continue
        run = layout[phase]
        per_msg = run.get("cpu_us_per_message", {})
        lost = run["messages"] - run.get("unique_received", 0)
        spread = " / ".join(f"{n:,}" for n in run.get("publishes_per_node", []))
        cells = [
            layout["label"],
            f"{run.get('accepted_per_s', 0):,}",
            f"{run.get('received_per_s', 0):,}",
            str(run.get("inversions", 0)),
            str(lost),
            str(run.get("duplicates", 0)),
            spread,
            *(_cell(per_msg.get(role)) for role in ROLES),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def update_docs_scale(markdown: str, doc: Path = SCALING_DOC) -> None:
    """Put ``markdown`` between the scale markers of ``docs/scaling.md``."""
    text = doc.read_text(encoding="utf-8")
    start, end = text.index(DOC_START) + len(DOC_START), text.index(DOC_END)
    doc.write_text(text[:start] + "\n\n" + markdown + "\n" + text[end:], encoding="utf-8")
