"""Operator views and actions: shard statistics and the dead-letter lists.

Used by the CLI; plain functions over a synchronous Redis client so they are easy
to call from a shell session or a script too.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ._clock import now_ms
from .connection import SyncRedisClient
from .exceptions import EnvelopeDecodeError, InvalidMessage, ReshardRefused
from .protocol import topology
from .protocol.deadletter import DeadLetter, decode_dead_letter
from .protocol.envelope import decode_envelope
from .protocol.keys import Keyspace
from .protocol.probe import ShardStatus, plan_status
from .protocol.scripts import SEAL_SHARD
from .publisher import DEFAULT_MAX_PAYLOAD_BYTES, Message, Publisher
from .publisher._plan import EnqueuePlan, plan

__all__ = [
    "RESHARD_TIMEOUT",
    "DeadLetterEntry",
    "ReplayReport",
    "ShardStats",
    "collect_stats",
    "iter_dead_letters",
    "purge_dead_letters",
    "recorded_keyspace",
    "relay_group",
    "replay_dead_letters",
    "reshard",
]


RESHARD_TIMEOUT = 60.0
"""Seconds ``reshard`` waits for the shards to drain before it gives up, by default."""


def recorded_keyspace(client: SyncRedisClient, prefix: str) -> Keyspace:
    """The keyspace recorded in Redis for ``prefix``; fails if nothing was recorded."""
    return Keyspace(prefix=prefix, shards=topology.require_shards(client, prefix))


@attrs.frozen
class ShardStats:
    """One shard at one moment, as ``centrifugo-async stats`` shows it."""

    shard: int
    queued: int
    in_flight: int
    oldest_age_ms: int | None
    """Age of the oldest waiting message (in-flight first), by its ``ts``."""
    dead_letters: int
    seq: int
    delivered: int
    expired: int
    dead_lettered: int
    lease_owner: str | None
    """Relay id of the lease holder."""
    lease_epoch: int | None
    """Fencing epoch of the current lease (grows with every takeover)."""
    lease_age_ms: int | None
    """Time since the current holder acquired the lease."""
    lease_ttl_ms: int | None
    """Time left before the lease expires unless renewed."""
    delivered_per_s: float | None = None
    """Throughput over the sampling window, when one was asked for."""
    superseded: int = 0
    """Messages not sent because a newer version of their key was delivered or in hand."""


def collect_stats(
    client: SyncRedisClient, keyspace: Keyspace, *, sample_seconds: float = 0.0
) -> list[ShardStats]:
    """A snapshot of every shard; with ``sample_seconds``, also the delivery rate.

    The rate is the growth of each shard's ``delivered`` counter over the window.
    """
    if sample_seconds <= 0:
        return _snapshot(client, keyspace)
    before = _snapshot(client, keyspace)
    started = time.monotonic()
    time.sleep(sample_seconds)
    after = _snapshot(client, keyspace)
    elapsed = time.monotonic() - started
    return [
        attrs.evolve(now, delivered_per_s=round((now.delivered - then.delivered) / elapsed, 1))
        for then, now in zip(before, after, strict=True)
    ]


def relay_group(client: SyncRedisClient, keyspace: Keyspace) -> list[str]:
    """Ids of the relays whose heartbeat has not expired."""
    members: list[bytes] = client.zrangebyscore(keyspace.relays, now_ms(), "+inf")  # type: ignore[assignment]
    return sorted(m.decode() for m in members)


def _snapshot(client: SyncRedisClient, keyspace: Keyspace) -> list[ShardStats]:
    """One consistent-enough snapshot of every shard, in one pipeline."""
    probe = plan_status(keyspace)
    pipe = client.pipeline(transaction=False)
    for command in probe.commands:
        pipe.execute_command(*command)
    statuses = probe.read(pipe.execute())
    sampled_ms = now_ms()
    return [_shard_stats(status, sampled_ms) for status in statuses]


def _shard_stats(status: ShardStatus, sampled_ms: int) -> ShardStats:
    depth, lease = status.depth, status.lease
    return ShardStats(
        shard=depth.shard,
        queued=depth.queued,
        in_flight=depth.in_flight,
        oldest_age_ms=depth.oldest_age_ms(sampled_ms),
        dead_letters=status.dead_letters,
        seq=status.seq,
        delivered=status.delivered,
        expired=status.expired,
        dead_lettered=status.dead_lettered,
        lease_owner=lease.owner if lease else None,
        lease_epoch=lease.epoch if lease else None,
        lease_age_ms=lease.age_ms(sampled_ms) if lease else None,
        lease_ttl_ms=lease.ttl_ms if lease else None,
        superseded=status.superseded,
    )


@attrs.frozen
class DeadLetterEntry:
    """One entry of a shard's dead-letter list, parsed if possible."""

    shard: int
    raw: bytes
    letter: DeadLetter | None
    """None when the list entry itself is not a dead-letter record."""


def iter_dead_letters(
    client: SyncRedisClient, keyspace: Keyspace, *, page: int = 500
) -> Iterator[DeadLetterEntry]:
    """Every dead letter, shard by shard, oldest first, read in pages."""
    for keys in keyspace.all_shards():
        start = 0
        while True:
            chunk: list[bytes] = client.lrange(keys.dlq, start, start + page - 1)  # type: ignore[assignment]
            for raw in chunk:
                try:
                    letter: DeadLetter | None = decode_dead_letter(raw)
                except EnvelopeDecodeError:
                    letter = None
                yield DeadLetterEntry(keys.shard, raw, letter)
            if len(chunk) < page:
                break
            start += page


def matches(entry: DeadLetterEntry, channel: str | None, error: str | None) -> bool:
    """``channel`` is a glob (``orders:*``); ``error`` a case-insensitive substring."""
    letter = entry.letter
    if letter is None:
        return channel is None and error is None
    if channel is not None and not fnmatch.fnmatchcase(letter.channel or "", channel):
        return False
    if error is not None:
        haystack = f"{letter.reason} {letter.code} {letter.error}".lower()
        return error.lower() in haystack
    return True


@attrs.define
class ReplayReport:
    """What ``replay_dead_letters`` did (or would do, in a dry run)."""

    matched: int = 0
    """Dead letters that match the filters: all of them are replayed or skipped."""
    replayed: int = 0
    skipped: list[str] = attrs.Factory(list)

    @property
    def done(self) -> int:
        """Matching letters handled so far, replayed or skipped."""
        return self.replayed + len(self.skipped)


def replay_dead_letters(
    client: SyncRedisClient,
    keyspace: Keyspace,
    *,
    channel: str | None = None,
    error: str | None = None,
    dry_run: bool = False,
    progress: Callable[[ReplayReport], Any] | None = None,
    max_payload_bytes: int | None = None,
) -> ReplayReport:
    """Publish matching dead letters again, then remove them from the dead-letter list.

    A replayed envelope is enqueued anew (a fresh ``seq``) with its original
    channel, key, version, data, options and ``ts`` (a delete stays a delete):
    keeping the enqueue time keeps ``ttl_ms`` and the late-delivery policies
    bounding how late it may arrive, so a replay cannot deliver a typing
    indicator from last week.
    Subscribers' version gates drop it if a newer version was delivered
    meanwhile. Entries that cannot be replayed stay where they are and are
    reported in ``skipped``, the run going on: records that are not envelopes,
    and envelopes the publisher refuses (over ``max_payload_bytes``, the
    publisher's default unless given, or otherwise invalid). A dry run checks
    each letter the same way, so it reports the same.
    """
    report = ReplayReport()
    publisher = Publisher(
        client,
        shards=keyspace.shards,
        prefix=keyspace.prefix,
        max_payload_bytes=max_payload_bytes or DEFAULT_MAX_PAYLOAD_BYTES,
    )
    entries = [e for e in iter_dead_letters(client, keyspace) if matches(e, channel, error)]
    report.matched = len(entries)
    for entry in entries:
        try:
            batch = _replay_plan(entry, publisher)
        except (EnvelopeDecodeError, InvalidMessage) as exc:
            report.skipped.append(f"shard {entry.shard}: cannot replay: {exc}")
        else:
            if not dry_run:
                publisher._run(batch)
                client.lrem(keyspace.shard(entry.shard).dlq, 1, entry.raw)  # type: ignore[arg-type]
            report.replayed += 1
        if progress is not None:
            progress(report)
    return report


def _replay_plan(entry: DeadLetterEntry, publisher: Publisher) -> EnqueuePlan:
    """The enqueue of one dead letter's envelope, checked like any publish, with its ``ts``."""
    if entry.letter is None:
        raise EnvelopeDecodeError("the list entry is not a dead-letter record")
    env = decode_envelope(entry.letter.original)
    message = Message(
        env.channel,
        env.data,
        env.key,
        env.version,
        env.tags,
        env.idempotency_key,
        env.ttl_ms,
        deleted=env.deleted,
    )
    return plan((message,), publisher.keyspace, publisher.max_payload_bytes, created_ms=env.ts)


def purge_dead_letters(
    client: SyncRedisClient,
    keyspace: Keyspace,
    *,
    channel: str | None = None,
    error: str | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> int:
    """Delete matching dead letters (all of them without filters); returns the count.

    With filters, each letter is looked at in turn: ``progress(done, total)``
    is called after each one (``total``: the letters looked at).
    """
    if channel is None and error is None:
        pipe = client.pipeline(transaction=False)
        for keys in keyspace.all_shards():
            pipe.llen(keys.dlq)
            pipe.delete(keys.dlq)
        return sum(pipe.execute()[0::2])
    removed = 0
    entries = list(iter_dead_letters(client, keyspace))
    for done, entry in enumerate(entries, 1):
        if matches(entry, channel, error):
            removed += client.lrem(keyspace.shard(entry.shard).dlq, 1, entry.raw)  # type: ignore[arg-type]
        if progress is not None:
            progress(done, len(entries))
    return removed


def reshard(
    client: SyncRedisClient,
    prefix: str,
    shards: int,
    *,
    timeout: float = RESHARD_TIMEOUT,
    progress: Callable[[list[int]], Any] | None = None,
) -> Keyspace:
    """Change the shard count without ever reordering a key: drain, seal, switch.

    Each current shard is *sealed* (stamped with the new count) at a moment when
    it holds no message, so everything routed the old way was delivered first;
    from then on the enqueue script refuses old-count publishers on that shard.
    New-count publishers are refused by the recorded count until every shard is
    sealed; then the count is recorded and relays restart their workers on it.
    Keep the relay running so the shards drain. If some shard does not empty
    within ``timeout`` the seals are undone and ``ReshardRefused`` names the
    shards still holding messages: nothing changes.
    """
    current = recorded_keyspace(client, prefix)
    target = Keyspace(prefix=prefix, shards=shards)
    if shards == current.shards:
        return current
    seal = client.register_script(SEAL_SHARD.source)
    pending = list(range(current.shards))
    sealed: list[int] = []
    deadline = time.monotonic() + timeout
    while pending:
        for shard in list(pending):
            keys = current.shard(shard)
            if seal(keys=[keys.queue, keys.inflight, keys.state], args=[shards]):
                pending.remove(shard)
                sealed.append(shard)
        if not pending:
            break
        if progress is not None:
            progress(pending)
        if time.monotonic() > deadline:
            for shard in sealed:
                keys = current.shard(shard)
                seal(keys=[keys.queue, keys.inflight, keys.state], args=[current.shards])
            raise ReshardRefused(
                f"reshard to {shards} shards refused: shards {pending} still hold messages "
                f"after {timeout:.0f}s (is a relay running to drain them, are publishers "
                f"stopped?); nothing was changed, the count stays {current.shards}"
            )
        time.sleep(0.2)
    topology.switch_shards(client, prefix, shards)
    return target
