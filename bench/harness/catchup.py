"""Catching up after an outage: a backlog, then the time until every key is at its latest.

The producer enqueues ``backlog`` updates (the workload: ``keys`` keys in the
seeded random order, versions counting up per key) while no relay runs, as if
Centrifugo had been down and the relay waiting: nothing moves. A WebSocket
subscriber is connected; then one relay (16 shards) starts. The phase measures,
from the relay's start, the time until the subscriber has received every key's
last version, and how many publications Centrifugo accepted on the way, once
with the relay's default freshness (``monotonic``: every version, in order) and
once with ``latest`` (only the newest version of each key in hand).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.procstats import cpu_seconds, peak_rss_mb
from bench.workload import now_us
from centrifugo_async import Keyspace
from centrifugo_async.admin import collect_stats
from devstack import RelayProcess

from .movers import relay_process
from .phases import repeated
from .roles import producer, subscriber
from .settings import Settings
from .stack import Stack
from .systems import System

__all__ = ["MODES", "run_catchup"]

MODES = {"monotonic": None, "latest": "*=latest"}
"""The relay's ``--freshness`` per measured mode (None: its default, monotonic)."""
ENQUEUE_TIMEOUT = 600.0


def run_catchup(settings: Settings, logs: Path, shards: int = 16) -> dict[str, Any]:
    """Both modes on a backlog of ``settings.backlog`` messages (each ``repeat`` times)."""
    result: dict[str, Any] = {
        "messages": settings.backlog,
        "keys": settings.workload.keys,
        "shards": shards,
        "modes": {},
    }
    for mode in MODES:

        def once(run: int, mode: str = mode) -> dict[str, Any]:
            return _catch_up(settings, logs, shards, mode, run)

        result["modes"][mode] = repeated(
            settings, lambda r: r.get("seconds_to_latest") or 1e9, once
        )
    return result


def _catch_up(settings: Settings, logs: Path, shards: int, mode: str, run: int) -> dict[str, Any]:
    """One run: enqueue, subscribe, start the relay, wait for every key's last version."""
    count, freshness = settings.backlog, MODES[mode]
    system = System(f"relay-catchup-{mode}", f"relay catching up, {mode}", "relay", True)
    result: dict[str, Any] = {"mode": mode, "freshness": freshness or "(default)"}
    channel = f"obj:catchup-{mode}-{run}"
    timeout = max(120.0, count / 2000)
    with tempfile.TemporaryDirectory(prefix="bench-catchup-") as tmp:
        workdir = Path(tmp)
        stack = Stack(None)
        relay: RelayProcess | None = None
        try:
            with producer(system, stack, channel, count, 0, settings, workdir / "prod.json") as p:
                p.wait(ENQUEUE_TIMEOUT)
            sub_out = workdir / "sub.json"
            latest_of = ("--until-latest-of", str(count), "--keys", str(settings.workload.keys))
            log = logs / f"catchup-{mode}-subscriber.log"
            with subscriber(stack, channel, count, timeout, sub_out, log, *latest_of):
                servers_before = stack.cpu_seconds()
                started_us = now_us()
                relay = relay_process(stack, shards, freshness).start()
                relay_pid = relay.pid
                assert relay_pid is not None
            tally = json.loads(sub_out.read_text())
            done_us = int(tally.get("done_us") or 0)
            accepted = _settled_accepted(stack, channel)
            result.update(
                complete=bool(done_us) and tally["keys_at_latest"] == tally["keys"],
                keys_in_backlog=tally["keys"],
                seconds_to_latest=round((done_us - started_us) / 1e6, 2) if done_us else None,
                publications=accepted,
                received=tally["received"],
                inversions=tally["inversions"],
                superseded=_superseded(stack, shards),
                relay_cpu_seconds=round(cpu_seconds([relay_pid]), 2),  # with its start-up
                server_cpu_seconds={
                    name: round(seconds - servers_before[name], 2)
                    for name, seconds in stack.cpu_seconds().items()
                },
                relay_peak_rss_mb=peak_rss_mb(relay_pid),
                problems=tally["problems"],
            )
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if relay is not None:
                relay.stop()
                relay.close()
            stack.close()
    return result


def _settled_accepted(stack: Stack, channel: str, quiet: float = 0.5) -> int:
    """Centrifugo's count for ``channel`` once it stopped growing for ``quiet`` seconds
    (the monotonic run may still send versions the subscriber no longer waits for)."""
    last, since = stack.accepted(channel), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = stack.accepted(channel)
        if now != last:
            last, since = now, time.monotonic()
    return last


def _superseded(stack: Stack, shards: int) -> int:
    client = redis.Redis.from_url(stack.redis.url)
    try:
        return sum(s.superseded for s in collect_stats(client, Keyspace(shards=shards)))
    finally:
        client.close()
