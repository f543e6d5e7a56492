"""The system's own processes between the producer and Centrifugo: relays, a naive worker,
the outbox forwarder, or none.

The built-in consumers run inside Centrifugo and the ceiling's producer posts
to Centrifugo itself, so those systems have no mover process.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
import redis

from centrifugo_async import Keyspace
from centrifugo_async.outbox import OutboxTable
from devstack import DEV_API_KEY, ChildProcess, ForwarderProcess, RelayProcess, stop_together

from .roles import combined_process, naive_worker
from .settings import Settings
from .stack import Stack
from .systems import System

__all__ = ["Mover", "relay_process", "wait_for_lanes", "wait_for_leases"]

LEASES_TIMEOUT = 60.0
LANES_TIMEOUT = 60.0


def relay_process(stack: Stack, shards: int, freshness: str | None = None) -> RelayProcess:
    """``centrifugo-async relay`` with its defaults (not started yet), or the given
    ``--freshness``; devstack turns its metrics endpoint off, so two relays (and
    other test runs) do not fight over its port."""
    extra = ["--freshness", freshness] if freshness else []
    return RelayProcess(
        stack.redis.url, stack.centrifugo.api_url, DEV_API_KEY, "--shards", str(shards), *extra
    )


def wait_for_leases(
    stack: Stack, shards: int, relays: Sequence[ChildProcess], *, balanced: bool = True
) -> None:
    """Ready when every shard's lease is held and (``balanced``) the relays hold equal
    shares, ±1.

    Relays joining a group rebalance by handing shards over, and a shard waits
    for its new owner's next lease tick (a few seconds): measuring before the
    shares settle would time a hand-over, not the relay. The quick mode does not
    wait, so a hand-over may happen during it, which it survives.
    """
    client = redis.Redis.from_url(stack.redis.url)
    leases = [keys.lease for keys in Keyspace(shards=shards).all_shards()]
    deadline = time.monotonic() + LEASES_TIMEOUT
    try:
        while True:
            values = client.mget(leases)
            held: dict[bytes, int] = {}
            for value in values:
                if isinstance(value, bytes):
                    owner = value.split(b"#")[0]
                    held[owner] = held.get(owner, 0) + 1
            shares = list(held.values())
            if sum(shares) == shards and (
                not balanced
                or (len(shares) == min(len(relays), shards) and max(shares) - min(shares) <= 1)
            ):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(r.log()[-2000:] for r in relays)
                raise RuntimeError(
                    f"relays did not share the leases within {LEASES_TIMEOUT:g}s:\n{logs}"
                )
            time.sleep(0.05)
    finally:
        client.close()


def wait_for_lanes(dsn: str, lanes: int, forwarders: Sequence[ChildProcess]) -> None:
    """Ready when forwarders hold the advisory locks of all ``lanes`` outbox lanes.

    A forwarder claims its lanes right after it connects; rows written before
    that would wait for its first sweep and show up as latency.
    """
    deadline = time.monotonic() + LANES_TIMEOUT
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            owned = conn.execute(OutboxTable().lane_owners).fetchall()
            if len(owned) >= lanes:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f.log()[-2000:] for f in forwarders)
                raise RuntimeError(
                    f"forwarders took {len(owned)} of {lanes} lanes in {LANES_TIMEOUT:g}s:\n{logs}"
                )
            time.sleep(0.05)


class Mover:
    """The processes ``system`` runs between Redis and Centrifugo (may be none).

    ``start()`` returns once they are ready to move messages; ``close()`` stops
    whatever was started, also after a failed ``start()``, and keeps their logs
    in ``logs``.
    """

    def __init__(self, system: System, logs: Path) -> None:
        self.system = system
        self.logs = logs
        self.workers: list[ChildProcess] = []
        self.relays: list[ChildProcess] = []
        self.forwarders: list[ChildProcess] = []

    def start(self, stack: Stack, settings: Settings) -> None:
        system = self.system
        if system.kind == "naive":
            worker = naive_worker(system, stack, self.logs / f"{system.name}-worker.log")
            self.workers.append(worker)
            worker.start()
        elif system.kind == "relay":
            for _ in range(system.processes):
                relay = relay_process(stack, system.shards, system.freshness)
                self.relays.append(relay)
                relay.start()
            wait_for_leases(stack, system.shards, self.relays, balanced=settings.balanced)
        elif system.kind == "outbox":
            self._start_outbox(stack)

    def _start_outbox(self, stack: Stack) -> None:
        """A forwarder and a relay, or (``combined``) one process running both."""
        system = self.system
        assert stack.database is not None
        dsn = stack.database.dsn
        if system.combined:
            process = combined_process(stack, dsn, system.shards)
            self.relays.append(process)
            process.start()
            wait_for_lanes(dsn, system.shards, [process])
        else:
            forwarder = ForwarderProcess(dsn, stack.redis.url, "--shards", str(system.shards))
            self.forwarders.append(forwarder)
            forwarder.start()
            relay = relay_process(stack, system.shards)
            self.relays.append(relay)
            relay.start()
            wait_for_lanes(dsn, system.shards, [forwarder])
        wait_for_leases(stack, system.shards, self.relays)

    def stop_forwarding(self) -> None:
        """Stop the outbox forwarders (or the combined process): they free their lanes."""
        stop_together(self.relays if self.system.combined else self.forwarders)

    def start_forwarding(self, stack: Stack) -> None:
        """Start them again; while the harness holds the lanes (``database.held_lanes``)
        they stand by, and take the lanes within their claim interval once it lets go."""
        if self.system.combined:
            for process in self.relays:
                process.start()
            wait_for_leases(stack, self.system.shards, self.relays)
        else:
            for process in self.forwarders:
                process.start()

    def pids(self) -> list[int]:
        processes = [*self.workers, *self.forwarders, *self.relays]
        return [process.pid for process in processes if process.pid is not None]

    def forwarder_pids(self) -> list[int]:
        """The forwarders run as processes of their own (empty when combined)."""
        return [process.pid for process in self.forwarders if process.pid is not None]

    def close(self) -> None:
        """Stop everything in parallel: each relay takes up to its idle wait (1 s) to
        notice the SIGTERM."""
        stop_together([*self.workers, *self.forwarders, *self.relays])
        for worker in self.workers:
            worker.close()
        for role, processes in (("forwarder", self.forwarders), ("relay", self.relays)):
            for index, process in enumerate(processes):
                with contextlib.suppress(OSError):
                    shutil.copyfile(
                        process.log_path, self.logs / f"{self.system.name}-{role}{index}.log"
                    )
                process.close()
