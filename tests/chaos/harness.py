"""Chaos harness: many publishers, 3 relays, 16 shards, faults injected while it runs.

``python -m tests.chaos [--messages 50000] [--keys 1000] [--report chaos.json]``

Publishers enqueue ``messages`` versioned updates over ``keys`` keys while
WebSocket subscribers (one per channel group, recoverable) record every
publication in arrival order. Meanwhile the harness SIGKILLs a random relay and
restarts it every few seconds, SIGSTOPs one past its lease and resumes it, and
restarts Centrifugo once (its Redis engine keeps history, so subscribers
recover what they missed). Then it checks, from what the subscribers saw
*before* any client-side gate: published, delivered, lost, duplicated and
per-key order inversions; and it feeds the same stream through ``VersionGate``
to show that the duplicates are dropped there. Bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from typing import Any

import attrs
import redis
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

from centrifugo_async import AsyncPublisher, Keyspace, Message
from centrifugo_async.admin import collect_stats
from centrifugo_async.client import VersionGate
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess

SHARDS = 16
RELAYS = 3
PUBLISHERS = 4
CHANNEL_GROUPS = 4
CHANNELS_PER_GROUP = 4
LEASE_TTL = 2.0


@attrs.frozen
class ChaosConfig:
    messages: int = 50_000
    keys: int = 1_000
    seconds: float = 20.0
    """How long publishing is spread over (the faults happen meanwhile)."""
    kill_every: float = 3.0
    drain_timeout: float = 120.0
    seed: int = 1


@attrs.define
class ChaosReport:
    published: int = 0
    delivered: int = 0
    unique_delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    inversions: int = 0
    gate_dropped_duplicates: int = 0
    gate_dropped_stale: int = 0
    gate_applied: int = 0
    relay_kills: int = 0
    relay_pauses: int = 0
    centrifugo_restarts: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    faults: list[str] = attrs.Factory(list)

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.inversions == 0
            and self.dead_letters == 0
            and self.gate_applied == self.unique_delivered
            and self.gate_dropped_duplicates + self.gate_dropped_stale == self.duplicated
        )

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"chaos {verdict}: published={self.published} delivered={self.delivered} "
            f"lost={self.lost} duplicated={self.duplicated} inversions={self.inversions} "
            f"gate_dropped={self.gate_dropped_duplicates + self.gate_dropped_stale} "
            f"kills={self.relay_kills} pauses={self.relay_pauses} "
            f"centrifugo_restarts={self.centrifugo_restarts} in {self.seconds:.1f}s"
        )


def centrifugo_overrides(engine_redis_url: str) -> dict[str, Any]:
    """Redis engine (history and idempotency survive a Centrifugo restart) and deep history."""
    namespace = {
        "name": "obj",
        "history_size": 20_000,
        "history_ttl": "600s",
        "force_recovery": True,
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
    }
    return {
        "engine": {"type": "redis", "redis": {"address": [engine_redis_url]}},
        "channel": {"namespaces": [namespace]},
    }


class Recorder(SubscriptionEventHandler):
    def __init__(self, arrivals: list[dict[str, Any]], changed: asyncio.Event) -> None:
        self.arrivals = arrivals
        self.changed = changed

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.arrivals.append(ctx.pub.data)
        self.changed.set()


def channel_for(run: str, key_index: int) -> str:
    return f"obj:chaos-{run}-{key_index % (CHANNEL_GROUPS * CHANNELS_PER_GROUP)}"


def group_channels(run: str, group: int) -> list[str]:
    total = CHANNEL_GROUPS * CHANNELS_PER_GROUP
    return [f"obj:chaos-{run}-{c}" for c in range(total) if c % CHANNEL_GROUPS == group]


class Chaos:
    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.run_id = f"{int(time.time())}"
        self.report = ChaosReport()
        self.sent: list[tuple[str, int]] = []
        self.arrivals: list[list[dict[str, Any]]] = [[] for _ in range(CHANNEL_GROUPS)]
        self.changed = asyncio.Event()
        self.paused: set[int] = set()

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        with ExitStack() as stack:
            queue_redis = stack.enter_context(RedisServer())
            engine_redis = stack.enter_context(RedisServer())
            centrifugo = stack.enter_context(
                CentrifugoServer(extra_config=centrifugo_overrides(engine_redis.url))
            )
            relays = [self._relay(queue_redis, centrifugo) for _ in range(RELAYS)]
            stack.callback(lambda: [r.close() for r in relays])
            clients = await self._subscribe(centrifugo)
            try:
                publishing = asyncio.create_task(self._publish_all(queue_redis.url))
                await self._inject_faults(publishing, relays, queue_redis, centrifugo)
                await publishing
                await self._wait_for_drain(queue_redis.url)
                stats = collect_stats(_client(queue_redis.url), Keyspace(shards=SHARDS))
                self.report.dead_letters = sum(s.dead_letters for s in stats)
            finally:
                for client in clients:
                    await client.disconnect()
                for relay in relays:
                    relay.stop()
        self._check()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _relay(self, redis: RedisServer, centrifugo: CentrifugoServer) -> RelayProcess:
        return RelayProcess(
            redis.url,
            centrifugo.api_url,
            DEV_API_KEY,
            "--shards",
            str(SHARDS),
            "--lease-ttl",
            str(LEASE_TTL),
            "--log-level",
            "warning",
        ).start()

    async def _subscribe(self, centrifugo: CentrifugoServer) -> list[Client]:
        clients = []
        for group in range(CHANNEL_GROUPS):
            client = Client(centrifugo.ws_url, max_reconnect_delay=1.0)
            await client.connect()
            recorder = Recorder(self.arrivals[group], self.changed)
            for channel in group_channels(self.run_id, group):
                sub = client.new_subscription(
                    channel, events=recorder, recoverable=True, positioned=True
                )
                await sub.subscribe()
            clients.append(client)
        return clients

    async def _publish_all(self, redis_url: str) -> None:
        per_publisher = self.config.messages // PUBLISHERS
        await asyncio.gather(
            *(self._publish(redis_url, p, per_publisher) for p in range(PUBLISHERS))
        )

    async def _publish(self, redis_url: str, index: int, count: int) -> None:
        """One publisher owning the keys ``k % PUBLISHERS == index``, paced over the run."""
        rng = random.Random(self.config.seed * 100 + index)
        owned = [k for k in range(self.config.keys) if k % PUBLISHERS == index]
        versions = dict.fromkeys(owned, 0)
        pace = self.config.seconds / max(1, count)
        started = time.monotonic()
        sent = 0
        async with AsyncPublisher.from_url(redis_url, shards=SHARDS) as publisher:
            while sent < count:
                batch = []
                for _ in range(min(count - sent, rng.choice([1, 10, 50]))):
                    k = rng.choice(owned)
                    versions[k] += 1
                    batch.append(
                        Message(channel_for(self.run_id, k), {"p": index}, f"key-{k}", versions[k])
                    )
                await publisher.publish_many(batch)
                self.sent.extend((m.key, m.version) for m in batch)
                sent += len(batch)
                ahead = started + sent * pace - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)

    async def _inject_faults(
        self,
        publishing: asyncio.Task[None],
        relays: list[RelayProcess],
        redis: RedisServer,
        centrifugo: CentrifugoServer,
    ) -> None:
        """Kill a relay every ``kill_every`` s; pause one once; restart Centrifugo once."""
        started = time.monotonic()
        side_faults: list[asyncio.Task[None]] = []
        while not publishing.done():
            await asyncio.wait({publishing}, timeout=self.config.kill_every)
            if publishing.done():
                break
            elapsed = time.monotonic() - started
            if not side_faults and elapsed > self.config.seconds * 0.2:
                side_faults.append(asyncio.create_task(self._pause_one(relays)))
            if len(side_faults) == 1 and elapsed > self.config.seconds * 0.5:
                side_faults.append(asyncio.create_task(self._restart_centrifugo(centrifugo)))
            victim = self.rng.randrange(len(relays))
            if victim in self.paused:
                continue
            self._note(f"SIGKILL relay {victim} at {elapsed:.1f}s")
            relays[victim].signal(signal.SIGKILL)
            relays[victim].wait()
            relays[victim].close()
            relays[victim] = self._relay(redis, centrifugo)
            self.report.relay_kills += 1

        await asyncio.gather(*side_faults)

    async def _pause_one(self, relays: list[RelayProcess]) -> None:
        """SIGSTOP a relay for twice its lease TTL: others take over, then it resumes."""
        victim = self.rng.randrange(len(relays))
        relay = relays[victim]
        self._note(f"SIGSTOP relay {victim} for {LEASE_TTL * 2 + 1:.0f}s (lease {LEASE_TTL}s)")
        self.paused.add(victim)
        relay.signal(signal.SIGSTOP)
        await asyncio.sleep(LEASE_TTL * 2 + 1)
        relay.signal(signal.SIGCONT)
        self.paused.discard(victim)
        self.report.relay_pauses += 1

    async def _restart_centrifugo(self, centrifugo: CentrifugoServer) -> None:
        self._note("restart centrifugo")
        await asyncio.to_thread(centrifugo.restart)
        self.report.centrifugo_restarts += 1

    def _note(self, event: str) -> None:
        self.report.faults.append(event)

    async def _wait_for_drain(self, redis_url: str) -> None:
        """Wait until Redis is empty and the subscribers have had everything."""
        client = _client(redis_url)
        keyspace = Keyspace(shards=SHARDS)
        expected = len(self.sent)
        async with asyncio.timeout(self.config.drain_timeout):
            while True:
                stats = collect_stats(client, keyspace)
                drained = all(s.queued == 0 and s.in_flight == 0 for s in stats)
                received = len({(e["key"], e["version"]) for a in self.arrivals for e in a})
                if drained and received >= expected:
                    break
                await asyncio.sleep(0.2)
            while True:  # let late duplicates arrive too
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), 1.0)
                except TimeoutError:
                    break

    def _check(self) -> None:
        report = self.report
        published = Counter(self.sent)
        report.published = len(self.sent)
        arrivals = [e for group in self.arrivals for e in group]
        unique = {(e["key"], e["version"]) for e in arrivals}
        report.delivered = len(arrivals)
        report.unique_delivered = len(unique)
        report.lost = len(set(published) - unique)
        report.duplicated = len(arrivals) - len(unique)
        for group in self.arrivals:
            highest: dict[str, int] = defaultdict(lambda: -1)
            gate = VersionGate(max_keys=self.config.keys * 2)
            for envelope in group:
                key, version = envelope["key"], envelope["version"]
                if version < highest[key]:
                    report.inversions += 1
                highest[key] = max(highest[key], version)
                decision = gate.check(key, version)
                if decision.accepted:
                    report.gate_applied += 1
                elif decision.reason == "duplicate":
                    report.gate_dropped_duplicates += 1
                else:
                    report.gate_dropped_stale += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "config": attrs.asdict(self.config),
            "report": attrs.asdict(self.report),
            "passed": self.report.passed,
        }


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


async def run_chaos(config: ChaosConfig) -> tuple[ChaosReport, dict[str, Any]]:
    chaos = Chaos(config)
    report = await chaos.run()
    return report, chaos.as_json()


def write_report(path: str, content: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2)
        handle.write("\n")
