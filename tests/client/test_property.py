"""Randomized property test of SyncedSubscription + VersionGate, the twin of
js-client/test/property.test.js (read its header for the model).

A backend commits updates, deletes and re-creations of a few keys; the network
delivers every envelope at least once, late, duplicated and reordered, and loses
some during a disconnect that recovery cannot repair; loads and ``reload_key``
fetches read the backend at random later moments; the gate remembers fewer keys
than there are, so the app reloads a key on every ``"evicted"`` drop (half the
time from ``on_drop`` itself, half from a task of its own).

Properties: what the app shows of a key never goes backwards, and once
everything is delivered the app shows exactly the backend's live objects. Half of
the seeds load snapshots with tombstones and let the network re-send any old
version; the other half load live objects only, with a network that behaves like
a relay with monotonic delivery.

Between the backend and the network sits the relay's freshness (``Relay``, the
model of relay/freshness.py): every version (``all``), never one older than it
delivered (``monotonic``, the relay's default) or also only the newest of a key
it has in hand (``latest``), dropping the rest as superseded; its memory may
forget keys (a few keys per generation, as the version memory in Redis does
with many). With tombstones any of these may run; without, the relay is
monotonic or latest and never forgets (forgetting is the documented limit).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from centrifugo_async import Envelope
from centrifugo_async.client import Decision, Fetched, LoadResult, SyncedSubscription, VersionGate
from tests.client.fakes import FakeClient

SEEDS = 2000
STEPS = 120
KEYS = "abcdef"


class Failed(AssertionError):
    pass


class Relay:
    """The relay's freshness, as the subscriber sees it (module docstring)."""

    def __init__(self, mode: str, memory: int | None) -> None:
        self.mode = mode
        self.memory = memory
        """Keys per generation; None: it never forgets."""
        self.current: dict[str, int] = {}
        self.old: dict[str, int] = {}

    def superseded(self, key: str, version: int, in_flight: list[tuple[str, int, bool]]) -> bool:
        """Whether the relay drops this envelope instead of sending it (and remembers it if not)."""
        if self.mode == "all":
            return False
        if self.mode == "latest" and any(k == key and v > version for k, v, _ in in_flight):
            return True
        if version < max(self.current.get(key, -1), self.old.get(key, -1)):
            return True  # equal versions pass: a redelivery after a crash repeats one
        self.current[key] = max(version, self.current.get(key, -1))
        if self.memory is not None and len(self.current) >= self.memory:
            self.old, self.current = self.current, {}
        return False


class Model:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.tombstones = self.rng.random() < 0.5
        if self.tombstones:
            mode = self.rng.choice(("all", "monotonic", "latest"))
            self.relay = Relay(mode, self.rng.choice((None, 1, 2, 3)))
        else:
            self.relay = Relay(self.rng.choice(("monotonic", "latest")), None)
        self.backend: dict[str, tuple[int, bool]] = {}  # key -> (version, deleted)
        self.store: dict[str, int] = {}
        self.shown: dict[str, int] = {}
        self.log: list[str] = []
        self.loads: list[asyncio.Future[LoadResult]] = []
        self.fetches: list[tuple[str, asyncio.Future[Fetched]]] = []
        self.in_flight: list[tuple[str, int, bool]] = []
        self.connected = False
        self.tasks: set[asyncio.Task[bool]] = set()
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        """Record a broken property (raised by ``check``: the helper catches what
        its callbacks raise)."""
        tail = "\n".join(self.log[-40:])
        self.problems.append(f"seed {self.seed}: {message}\n{tail}")

    def check(self) -> None:
        if self.problems:
            raise Failed(self.problems[0])

    def show(self, key: str, version: int | None, what: str) -> None:
        if version is None:
            return
        if version < self.shown.get(key, -1):
            self.fail(f"{what} moved {key} back from {self.shown[key]} to {version}")
        self.shown[key] = version

    # -- the app -------------------------------------------------------------------

    async def load(self) -> LoadResult:
        future: asyncio.Future[LoadResult] = asyncio.get_running_loop().create_future()
        self.loads.append(future)
        try:
            return await future
        finally:  # cancelled when superseded: it never writes into the store
            if future in self.loads:
                self.loads.remove(future)

    def on_update(self, envelope: Envelope[Any], decision: Decision) -> None:
        key, version = envelope.key, envelope.version
        self.log.append(f"update {key}@{version}")
        if version <= self.store.get(key, -1):
            self.fail(f"update {key}@{version} is not newer than {self.store[key]}")
        self.show(key, version, "an update")
        self.store[key] = version

    def on_delete(self, envelope: Envelope[Any], decision: Decision) -> None:
        self.log.append(f"delete {envelope.key}@{envelope.version}")
        self.show(envelope.key, envelope.version, "a delete")
        self.store.pop(envelope.key, None)

    async def fetch(self, key: str) -> Fetched:
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        self.fetches.append((key, future))
        return await future

    async def on_drop(self, envelope: Envelope[Any], decision: Decision) -> None:
        self.log.append(f"drop {envelope.key}@{envelope.version} {decision.reason}")
        if decision.reason != "evicted":
            return
        if self.rng.random() < 0.5:
            await self.sync.reload_key(envelope.key, self.fetch)  # blocks the worker meanwhile
        else:
            task = asyncio.create_task(self.sync.reload_key(envelope.key, self.fetch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def on_error(self, exc: BaseException, context: str) -> None:
        self.fail(f"error {context}: {exc!r}")

    # -- the world -----------------------------------------------------------------

    def complete_load(self, index: int) -> None:
        future = self.loads.pop(index)
        if future.done():
            return  # cancelled (superseded): the app stopped
        items = [(key, version, deleted) for key, (version, deleted) in self.backend.items()]
        snapshot = items if self.tombstones else [item for item in items if not item[2]]
        if not self.tombstones:
            # Without tombstones the app cannot know when a missing object was
            # deleted: an older update still on its way may show it once more,
            # until its delete arrives (the documented limit). Its history starts over.
            for key, _, deleted in items:
                if deleted:
                    self.shown.pop(key, None)
        self.log.append(f"load {snapshot}")
        self.store = {}
        for key, version, deleted in snapshot:
            self.show(key, version, "a load")
            if not deleted:
                self.store[key] = version
        future.set_result(snapshot)

    def complete_fetch(self, index: int) -> None:
        key, future = self.fetches.pop(index)
        if future.done():
            return
        row = self.backend.get(key)
        self.log.append(f"fetch {key}: {row}")
        if row is None or row[1]:
            # A deleted object: half the time the backend knows its tombstone version.
            gone_at = row[0] if row is not None and self.rng.random() < 0.5 else None

            def remove() -> None:
                self.show(key, gone_at, "a reload")
                self.store.pop(key, None)

            future.set_result(Fetched(gone_at, remove, deleted=True))
        else:
            version = row[0]

            def put() -> None:
                self.show(key, version, "a reload")
                self.store[key] = version

            future.set_result(Fetched(version, put))

    def commit(self) -> None:
        key = self.rng.choice(KEYS)
        row = self.backend.get(key)
        deleted = row is not None and not row[1] and self.rng.random() < 0.3
        version = (row[0] if row else 0) + 1
        self.backend[key] = (version, deleted)
        for _ in range(2 if self.rng.random() < 0.2 else 1):
            self.in_flight.append((key, version, deleted))

    async def deliver(self) -> None:
        message = self.in_flight.pop(self.rng.randrange(len(self.in_flight)))
        key, version, deleted = message
        if self.relay.superseded(key, version, self.in_flight):
            self.log.append(f"superseded {key}@{version}")
            return
        if not self.connected:
            return  # lost while disconnected: only a reload repairs it
        if deleted:
            await self.subscription.publish(key, version, deleted=True)
        else:
            await self.subscription.publish(key, version)
        if self.rng.random() < 0.1:
            self.in_flight.append(message)

    async def run(self) -> None:
        client = FakeClient()
        self.sync = SyncedSubscription(
            client,  # type: ignore[arg-type]
            "obj:property",
            load=self.load,
            on_update=self.on_update,
            on_delete=self.on_delete,
            on_drop=self.on_drop,
            on_error=self.on_error,
            gate=VersionGate(max_keys=1 + self.rng.randrange(len(KEYS)), evicted_filter_bits=64),
            max_buffered=5 + self.rng.randrange(40),
        )
        start = asyncio.create_task(self.sync.start())
        await settle()
        self.subscription = client.subscriptions["obj:property"]
        await self.subscription.subscribed()
        self.connected = True
        await settle()
        for _ in range(STEPS):
            roll = self.rng.random()
            if roll < 0.35:
                self.commit()
            elif roll < 0.7 and self.in_flight:
                await self.deliver()
            elif roll < 0.8 and self.loads:
                self.complete_load(self.rng.randrange(len(self.loads)))
            elif roll < 0.9 and self.fetches:
                self.complete_fetch(self.rng.randrange(len(self.fetches)))
            elif roll < 0.93:
                self.connected = not self.connected
                if self.connected:
                    await self.subscription.subscribed(was_recovering=True, recovered=False)
            elif roll < 0.95:
                self.sync.request_resync("manual")
            await settle()
            self.check()
        if not self.connected:
            await self.subscription.subscribed(was_recovering=True, recovered=False)
            self.connected = True
        while self.in_flight or self.loads or self.fetches or self.sync.buffered:
            if self.in_flight:
                await self.deliver()
            elif self.loads:
                self.complete_load(0)
            elif self.fetches:
                self.complete_fetch(0)
            await settle()
            self.check()
        await start
        expected = {key: version for key, (version, deleted) in self.backend.items() if not deleted}
        if self.store != expected:
            self.fail(f"store {sorted(self.store.items())} != backend {sorted(expected.items())}")
        self.check()
        assert self.sync.state == "live"
        await self.sync.close()


async def settle() -> None:
    """Let the helper's worker and tasks run to their next wait (all in-process)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_two_thousand_seeds_converge_and_never_go_backwards() -> None:
    for seed in range(1, SEEDS + 1):
        await Model(seed).run()
