"""Chaos harness: many publishers, 3 relays, 16 shards, faults injected while it runs.

``python -m tests.chaos [--messages 50000] [--keys 1000] [--report chaos.json]``

Publishers enqueue ``messages`` versioned updates over ``keys`` keys while
WebSocket subscribers (one per channel group, recoverable) record every
publication in arrival order. The relays reach Centrifugo through the recording
proxy (``tests/support/relay_proxy.py``), which logs what each relay sent under
which lease. Meanwhile the harness SIGKILLs a random relay and restarts it every
few seconds, SIGSTOPs one while a batch of it is in flight (the proxy holds the
request), lets another relay take the shard over, then lets the held request
reach Centrifugo late and resumes the relay; and it restarts Centrifugo once
(its Redis engine keeps history and idempotency results, so subscribers recover
what they missed).

Every outcome ends with the report, also a run that cannot drain in time. From
what the subscribers saw *before* any client-side gate it counts published,
delivered, ``lost``, ``duplicated``, per-key ``inversions``, per-shard ``seq``
gaps and per-channel ``seq`` inversions; from the proxy log, commands sent
without the lease (``stale_sends``), sent twice by one owner after Centrifugo
accepted them (``sent_duplicates``), redelivered after a takeover and retried;
from Redis, how many messages were acknowledged. Then it replays each
subscriber's stream through a small ``VersionGate`` with injected stale copies
(``gate_replay.py``). Bounded in count and time.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
import signal
import time
from collections import Counter, defaultdict
from contextlib import AsyncExitStack
from typing import Any

import attrs
import redis
import redis.asyncio
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

from centrifugo_async import AsyncPublisher, Keyspace, Message, shard_for
from centrifugo_async.admin import collect_stats
from centrifugo_async.relay.freshness import DEFAULT_FRESHNESS, Freshness
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess
from tests.support.checks import seq_gaps, seq_inversions
from tests.support.relay_proxy import RecordingProxy, Send, SendLog

from .gate_replay import GateReplay, replay

SHARDS = 16
RELAYS = 3
PUBLISHERS = 4
CHANNEL_GROUPS = 4
CHANNELS_PER_GROUP = 4
LEASE_TTL = 2.0
PAUSE = LEASE_TTL * 2 + 1
REQUEST_TIMEOUT = 15.0
"""Longer than the pause, so the paused relay reads the late answer and tries to ack."""
GATE_KEYS = 200
"""Keys the replayed gate remembers: far fewer than a channel group has, so it evicts."""


@attrs.frozen
class ChaosConfig:
    messages: int = 50_000
    keys: int = 1_000
    seconds: float = 20.0
    """How long publishing is spread over (the faults happen meanwhile)."""
    kill_every: float = 3.0
    drain_timeout: float = 120.0
    seed: int = 1
    freshness: str | None = None
    """The relays' ``--freshness``; None runs them with their default (monotonic
    delivery), the mode production runs. With ``*=all`` every version must arrive.
    Otherwise a version may be left out, but only as a superseded one: a newer
    version of its key arrived, the relays counted it as ``superseded``, and each
    key's final version arrived (``ChaosReport`` says how that is checked)."""

    @property
    def mode(self) -> Freshness:
        """The mode of the chaos channels under ``freshness`` (the first matching rule)."""
        channel = channel_for("run", 0)
        for item in filter(None, (part.strip() for part in (self.freshness or "").split(","))):
            pattern, _, mode = item.rpartition("=")
            if fnmatch.fnmatchcase(channel, pattern.strip()):
                return Freshness(mode.strip())
        return DEFAULT_FRESHNESS


@attrs.define
class ChaosReport:
    """What the run showed; ``problems`` names every requirement it failed.

    On a monotonic (or latest) channel a published version that never arrived
    is ``skipped``, not ``lost``, only when a newer version of its key arrived.
    The relays' counters must then account for every message: each is
    acknowledged once, as delivered (``acked``) or as ``superseded``, so
    ``acked + superseded == published``; a message counted as delivered but
    never seen shows as ``acked > unique_delivered``; every key's final version
    must arrive (``finals_missing``); and a shard's seqs that never arrived must
    be exactly its skipped versions (``seq_gaps`` are the unexplained ones).
    """

    mode: str = "all"
    published: int = 0
    delivered: int = 0
    unique_delivered: int = 0
    lost: int = 0
    """Published versions that never arrived and no newer version of their key did."""
    skipped: int = 0
    """Versions that never arrived while a newer one of their key did (not under ``all``)."""
    finals_missing: int = 0
    """Keys whose final version never arrived."""
    superseded: int = 0
    """Messages the relays counted as superseded (the shards' counters)."""
    duplicated: int = 0
    inversions: int = 0
    window_inversions: int = 0
    """Inversions by the paused relay's late request: its documented fencing window
    (docs/relay.md, limits). Under ``all`` Centrifugo's idempotency check absorbs the
    late copy; under monotonic delivery the new owner may have sent only a newer
    version of that key, so the late copy arrives after it. Reported, not a failure."""
    seq_gaps: dict[int, int] = attrs.Factory(dict)
    """Per shard, how many of its seqs never reached a subscriber, beyond its skipped versions."""
    seq_inversions: int = 0
    acked: int = 0
    """Messages the relays acknowledged (the shards' ``delivered`` counters): one per message."""
    drained: bool = False
    """Redis emptied and every message arrived within ``drain_timeout``."""
    stale_sends: int = 0
    """Commands from a relay that did not hold the shard's lease, outside the window below."""
    window_sends: int = 0
    """The paused relay's request caught on its way by the pause (first attempts of messages
    it had claimed): the documented window, harmless (docs/scaling.md); reported."""
    sent_duplicates: int = 0
    redeliveries: int = 0
    retries: int = 0
    late_arrivals: int = 0
    """Held while their relay was stopped, forwarded after another relay took the shard."""
    pause_in_flight: int = 0
    """Messages of the paused relay's batch in flight when it was stopped."""
    gate: GateReplay = attrs.Factory(GateReplay)
    relay_kills: int = 0
    relay_pauses: int = 0
    centrifugo_restarts: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    faults: list[str] = attrs.Factory(list)

    @property
    def problems(self) -> list[str]:
        """Every failed requirement, named; empty when the run passed."""
        checks = {
            "did not drain": self.drained,
            "lost": self.lost == 0,
            "finals_missing": self.finals_missing == 0,
            "skipped under all": self.mode != Freshness.ALL or self.skipped == 0,
            "acked + superseded != published": self.acked + self.superseded == self.published,
            "acked but never seen": self.acked <= self.unique_delivered,
            "inversions": self.inversions == 0,
            "seq_gaps": not self.seq_gaps,
            "seq_inversions": self.seq_inversions == 0,
            "dead_letters": self.dead_letters == 0,
            "stale_sends": self.stale_sends == 0,
            "sent_duplicates": self.sent_duplicates == 0,
            "pause without a batch in flight": self.relay_pauses == 0 or self.pause_in_flight > 0,
            "gate": self.gate.passed,
        }
        return [name for name, ok in checks.items() if not ok]

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL ({', '.join(self.problems)})"
        gate = self.gate
        return (
            f"chaos {verdict} ({self.mode}): published={self.published} "
            f"delivered={self.delivered} lost={self.lost} skipped={self.skipped} "
            f"finals_missing={self.finals_missing} duplicated={self.duplicated} "
            f"inversions={self.inversions} window_inversions={self.window_inversions} "
            f"seq_gaps={sum(self.seq_gaps.values())} "
            f"seq_inversions={self.seq_inversions} acked={self.acked} "
            f"superseded={self.superseded} drained={self.drained} | "
            f"proxy: stale_sends={self.stale_sends} "
            f"window_sends={self.window_sends} "
            f"sent_duplicates={self.sent_duplicates} redeliveries={self.redeliveries} "
            f"retries={self.retries} late_arrivals={self.late_arrivals} | "
            f"gate: applied={gate.applied} dropped={gate.dropped} reloads={gate.reloads} "
            f"injected={gate.injected} injected_applied={gate.injected_applied} "
            f"regressions={gate.regressions} unconverged={gate.unconverged} | "
            f"kills={self.relay_kills} pauses={self.relay_pauses} "
            f"(in flight {self.pause_in_flight}) centrifugo_restarts={self.centrifugo_restarts} "
            f"in {self.seconds:.1f}s"
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
        self.report = ChaosReport(mode=config.mode.value)
        self.sent: list[tuple[str, int]] = []
        self.arrivals: list[list[dict[str, Any]]] = [[] for _ in range(CHANNEL_GROUPS)]
        self.changed = asyncio.Event()
        self.paused: set[int] = set()
        self.relay_ids: list[str] = []
        self.paused_relay: str | None = None
        self.in_flight_at_pause: set[tuple[int, int]] = set()
        self._generation = 0

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        async with AsyncExitStack() as stack:
            queue_redis = stack.enter_context(RedisServer())
            engine_redis = stack.enter_context(RedisServer())
            centrifugo = stack.enter_context(
                CentrifugoServer(extra_config=centrifugo_overrides(engine_redis.url))
            )
            self.proxy = await stack.enter_async_context(
                RecordingProxy(
                    centrifugo.api_url, DEV_API_KEY, queue_redis.url, unique_idempotency=False
                )
            )
            relays = [await self._relay(queue_redis) for _ in range(RELAYS)]
            stack.callback(lambda: [r.close() for r in relays])
            clients = await self._subscribe(centrifugo)
            try:
                publishing = asyncio.create_task(self._publish_all(queue_redis.url))
                await self._inject_faults(publishing, relays, queue_redis, centrifugo)
                await publishing
                self.report.drained = await self._wait_for_drain(queue_redis.url)
                stats = collect_stats(_client(queue_redis.url), Keyspace(shards=SHARDS))
                self.report.dead_letters = sum(s.dead_letters for s in stats)
                self.report.acked = sum(s.delivered for s in stats)
                self.report.superseded = sum(s.superseded for s in stats)
                last_seq = {s.shard: s.seq for s in stats}
            finally:
                for client in clients:
                    await client.disconnect()
                for relay in relays:
                    if relay.running():
                        relay.signal(signal.SIGCONT)
                    relay.stop()
        self._check(last_seq)
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _relay(self, redis_server: RedisServer) -> RelayProcess:
        self._generation += 1
        relay_id = f"chaos-relay-{self._generation:02d}"
        self.relay_ids.append(relay_id)
        freshness = [] if self.config.freshness is None else ["--freshness", self.config.freshness]
        return RelayProcess(
            redis_server.url,
            await self.proxy.endpoint(relay_id),
            DEV_API_KEY,
            "--relay-id",
            relay_id,
            "--shards",
            str(SHARDS),
            "--lease-ttl",
            str(LEASE_TTL),
            "--request-timeout",
            str(REQUEST_TIMEOUT),
            *freshness,
            "--log-level",
            "warning",
        ).start()

    def _id_of(self, relay: RelayProcess) -> str:
        return relay.args[relay.args.index("--relay-id") + 1]

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
        redis_server: RedisServer,
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
                side_faults.append(asyncio.create_task(self._pause_one(relays, redis_server)))
            if len(side_faults) == 1 and elapsed > self.config.seconds * 0.5:
                side_faults.append(asyncio.create_task(self._restart_centrifugo(centrifugo)))
            victim = self.rng.randrange(len(relays))
            if victim in self.paused:
                continue
            self._note(f"SIGKILL {self._id_of(relays[victim])} at {elapsed:.1f}s")
            relays[victim].signal(signal.SIGKILL)
            relays[victim].wait()
            relays[victim].close()
            relays[victim] = await self._relay(redis_server)
            self.report.relay_kills += 1

        await asyncio.gather(*side_faults)

    async def _pause_one(self, relays: list[RelayProcess], redis_server: RedisServer) -> None:
        """SIGSTOP a relay while the proxy holds two of its batches, past its lease TTL.

        Other relays take the shards over and redeliver those batches. While the
        relay is stopped, the first held request reaches Centrifugo late (the
        relay will read success and ack with its old lease: the ack must be
        refused, or ``acked`` shows it) and the second is answered 503 (the relay
        will want to retry: it must not send again). Then it resumes.
        """
        victim = self.rng.randrange(len(relays))
        self.paused.add(victim)
        relay = relays[victim]
        relay_id = self._id_of(relay)
        held = []
        for wait in (10.0, 5.0):  # the second batch is another shard's: the first is held
            hold = self.proxy.hold(relay=relay_id)
            try:
                held.append((hold, await hold.arrived(within=wait)))
            except TimeoutError:
                hold.cancel()
        if not held:
            self._note(f"no batch of {relay_id} in flight within 10 s: not paused")
            self.paused.discard(victim)
            return
        queue = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            self.in_flight_at_pause = await _in_flight_positions(queue)
            relay.signal(signal.SIGSTOP)
            stopped = time.monotonic()
            self.paused_relay = relay_id
            listed = {(r.shard, seq) for _, r in held for seq in r.seqs} & self.in_flight_at_pause
            self.report.pause_in_flight = len(listed)
            batches = ", ".join(f"shard {r.shard} seqs {r.seqs}" for _, r in held)
            self._note(f"SIGSTOP {relay_id} for {PAUSE:.0f}s (lease {LEASE_TTL}s), held: {batches}")
            for _, request in held:
                lease = Keyspace(shards=SHARDS).shard(request.shard).lease
                await _wait_for_owner_other_than(queue, lease, relay_id, within=PAUSE)
        finally:
            await queue.aclose()
        held[0][0].forward()
        for hold, _ in held[1:]:
            hold.answer(503)
        await asyncio.sleep(max(0.0, stopped + PAUSE - time.monotonic()))
        relay.signal(signal.SIGCONT)
        self.paused.discard(victim)
        self.report.relay_pauses += 1

    async def _restart_centrifugo(self, centrifugo: CentrifugoServer) -> None:
        self._note("restart centrifugo")
        await asyncio.to_thread(centrifugo.restart)
        self.report.centrifugo_restarts += 1

    def _note(self, event: str) -> None:
        self.report.faults.append(event)

    async def _wait_for_drain(self, redis_url: str) -> bool:
        """Wait until Redis is empty and the subscribers have had everything.

        Returns False when that does not happen within ``drain_timeout``: the
        report then says what is missing instead of the run ending in a timeout.
        """
        client = _client(redis_url)
        keyspace = Keyspace(shards=SHARDS)
        every_version = self.config.mode == Freshness.ALL
        expected = set(self.sent) if every_version else set(_finals(self.sent).items())
        deadline = time.monotonic() + self.config.drain_timeout
        while True:
            stats = collect_stats(client, keyspace)
            drained = all(s.queued == 0 and s.in_flight == 0 for s in stats)
            received = {(e["key"], e["version"]) for a in self.arrivals for e in a}
            if drained and expected <= received:
                break
            if time.monotonic() > deadline:
                what = "versions" if every_version else "final versions"
                self._note(
                    f"not drained after {self.config.drain_timeout:.0f}s: "
                    f"{sum(s.queued + s.in_flight for s in stats)} left in Redis, "
                    f"{len(expected & received)} of {len(expected)} {what} received"
                )
                return False
            await asyncio.sleep(0.2)
        while True:  # let late duplicates arrive too
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except TimeoutError:
                return True

    def _check(self, last_seq: dict[int, int]) -> None:
        report = self.report
        published = Counter(self.sent)
        report.published = len(self.sent)
        arrivals = [e for group in self.arrivals for e in group]
        unique = {(e["key"], e["version"]) for e in arrivals}
        report.delivered = len(arrivals)
        report.unique_delivered = len(unique)
        newest_arrived: dict[str, int] = defaultdict(int)
        for key, version in unique:
            newest_arrived[key] = max(newest_arrived[key], version)
        missing = set(published) - unique
        skipped = {(k, v) for k, v in missing if newest_arrived[k] > v}
        report.lost = len(missing - skipped)
        report.skipped = len(skipped)
        report.finals_missing = sum(
            1 for key, final in _finals(self.sent).items() if (key, final) not in unique
        )
        report.duplicated = len(arrivals) - len(unique)
        skipped_per_shard = Counter(shard_for(key, SHARDS) for key, _ in skipped)
        gaps = seq_gaps(arrivals, last_seq)
        unexplained = {s: gaps.get(s, 0) - skipped_per_shard[s] for s in range(SHARDS)}
        report.seq_gaps = {s: n for s, n in unexplained.items() if n}
        log = self.proxy.log
        kinds = log.classified()
        stale = log.stale()
        window = [s for s in stale if self._in_documented_window(s, log)]
        paused = {
            s.position
            for s in log
            if s.relay == self.paused_relay and (s.forwarded_late or s in window)
        }
        for n, group in enumerate(self.arrivals):
            highest: dict[str, int] = defaultdict(lambda: -1)
            in_order = []
            for envelope in group:
                key, version = envelope["key"], envelope["version"]
                if version < highest[key]:
                    if (envelope["shard"], envelope["seq"]) in paused:
                        report.window_inversions += 1
                        continue
                    report.inversions += 1
                highest[key] = max(highest[key], version)
                in_order.append(envelope)
            report.seq_inversions += seq_inversions(in_order)
            report.gate.add(replay(group, max_keys=GATE_KEYS, seed=self.config.seed + n))
        report.window_sends = len(window)
        report.stale_sends = len(stale) - len(window)
        report.sent_duplicates = len(kinds["duplicate"])
        report.redeliveries = len(kinds["redelivery"])
        report.retries = len(kinds["retry"])
        report.late_arrivals = sum(s.forwarded_late for s in log)
        if report.stale_sends or report.sent_duplicates:
            examples = [*[s for s in stale if s not in window][:3], *kinds["duplicate"][:3]]
            self._note(f"proxy log examples: {[attrs.asdict(s) for s in examples]}")

    def _in_documented_window(self, send: Send, log: SendLog) -> bool:
        """A stale send that the pause caught on its way (docs/scaling.md, the window).

        The paused relay checked its lease, then stopped before its request
        reached the proxy: a first attempt of messages it had claimed before the
        pause. A retry is never in the window: the relay checks before every
        attempt, and a stale retry is exactly what the check must prevent.
        """
        if send.relay != self.paused_relay or send.position not in self.in_flight_at_pause:
            return False
        earlier = log.repeats().get(send.position, [])
        return not any(e.relay == send.relay and e.request < send.request for e in earlier)

    def as_json(self) -> dict[str, Any]:
        return {
            "config": attrs.asdict(self.config),
            "report": attrs.asdict(self.report),
            "passed": self.report.passed,
            "problems": self.report.problems,
        }


async def _wait_for_owner_other_than(
    client: redis.asyncio.Redis, lease_key: str, relay_id: str, within: float
) -> None:
    """Until the shard's lease belongs to another relay (bounded: then just go on)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await client.get(lease_key)
        if value is not None and not value.decode().startswith(f"{relay_id}#"):
            return
        await asyncio.sleep(0.05)


async def _in_flight_positions(client: redis.asyncio.Redis) -> set[tuple[int, int]]:
    """Every (shard, seq) in an in-flight list right now."""
    pipe = client.pipeline(transaction=False)
    for keys in Keyspace(shards=SHARDS).all_shards():
        pipe.lrange(keys.inflight, 0, -1)
    lists = await pipe.execute()
    return {
        (shard, json.loads(entry)["seq"])
        for shard, entries in enumerate(lists)
        for entry in entries
    }


def _finals(sent: list[tuple[str, int]]) -> dict[str, int]:
    """Each key's final (highest) published version."""
    finals: dict[str, int] = {}
    for key, version in sent:
        finals[key] = max(finals.get(key, 0), version)
    return finals


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
