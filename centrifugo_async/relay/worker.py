"""``ShardWorker``: moves one shard's messages into Centrifugo, in order, at least once.

One batch in flight per shard. Each round:

1. ``CLAIM`` (fenced by the lease) returns the head of the in-flight list if it is
   not empty (left by a crash or a failed ack), else moves up to ``max_batch``
   messages from the queue to the in-flight list. The batch is as large as the
   backlog allows: 1 message when idle, ``max_batch`` when behind.
2. Entries that are not valid envelopes, or break the JSON profile every SDK
   can decode (``protocol.ijson``), are dead-lettered with the rule they broke
   as the reason; expired ones (past ``ttl_ms``) are counted; the rest become
   publish commands whose ``data`` is the envelope bytes, unchanged. On
   monotonic and latest channels (``freshness``) the envelopes a newer version
   of their key supersedes are dropped and counted as superseded.
3. The commands go to ``/api/batch`` with ``parallel: false``. Retryable failures
   are retried with backoff while the shard waits; rejected commands are
   dead-lettered; a refused body is resent one command at a time to isolate it
   (each answer is settled by ``window.settle_window``).
4. ``ACK`` (fenced) removes the batch from the in-flight list and records dead
   letters, counters and the versions just delivered in one step. Claim and ack
   keep working when Redis is at ``maxmemory`` (see ``protocol.scripts``),
   except an ack whose dead letters would grow memory: that one is retried with
   backoff until Redis has room, the batch staying in flight meanwhile, so no
   dead letter is ever dropped.

The ack usually claims the next batch in the same script (``ACK_CLAIM``: one
round trip per batch instead of two), whenever the next round would claim at
once: the lease still held and not being handed over, no superseded head to drop
first (``lookahead``), the relay not stopping. A claim that finds the queue
empty sends the worker straight to the bell (``BLPOP``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs
import redis.exceptions

from .._clock import now_ms
from .._retry import Backoff, wait_for_event
from ..connection import AsyncRedisClient
from ..exceptions import EnvelopeDecodeError
from ..protocol.deadletter import DeadLetter, encode_dead_letter
from ..protocol.envelope import channel_of, decode_envelope
from ..protocol.keys import ShardKeys
from ..protocol.scripts import (
    ACK,
    ACK_CLAIM,
    ACK_GROWING,
    ACK_GROWS,
    CLAIM,
    DROP_SUPERSEDED,
    LEASE_LOST,
)
from .api import BatchResult, CentrifugoAPI, RetryCause, Verdict, publish_command
from .freshness import (
    Candidate,
    Freshness,
    decode_key_version,
    latest_only,
    newest,
    outdated,
    supersede,
    version_field,
)
from .lease import LeaseKeeper
from .lookahead import LookAhead
from .metrics import RelayMetrics
from .settings import RelaySettings
from .supervision import supervise
from .tracing import BatchTracer
from .versions import VersionMemory
from .window import Retry, WindowOutcome, settle_window

__all__ = ["ShardWorker"]

log = logging.getLogger("centrifugo_async.relay")

RULES_CACHE_SIZE = 8192
"""Channels whose rules a worker remembers (channels repeat endlessly; some are per user)."""


@attrs.define
class _Item:
    """One claimed entry and what became of it."""

    raw: bytes
    channel: str | None = None
    key: str = ""
    version: int = 0
    ts: int = 0
    traceparent: str | None = None
    command: bytes | None = None
    delivered: bool = False
    expired: bool = False
    dead_letter: DeadLetter | None = None
    candidate: Candidate | None = None
    """Set on monotonic and latest channels (``freshness``)."""
    superseded: bool = False


@attrs.define
class _Outgoing:
    """An item that became a publish command, waiting to be accepted.

    Not frozen: one is made per message on the hot path, and a frozen attrs
    class's ``__init__`` costs about three times a plain slotted one's.
    """

    item: _Item
    command: bytes


@attrs.define
class _Counts:
    delivered: int = 0
    expired: int = 0
    dead_lettered: int = 0
    retries: int = 0
    restarts: int = 0
    superseded: int = 0


class _LeaseLost(Exception):
    pass


class ShardWorker:
    def __init__(
        self,
        keys: ShardKeys,
        client: AsyncRedisClient,
        api: CentrifugoAPI,
        leases: LeaseKeeper,
        settings: RelaySettings,
        stop: asyncio.Event,
        metrics: RelayMetrics,
    ) -> None:
        self.keys = keys
        self.shard = keys.shard
        self._redis = client
        self._api = api
        self._leases = leases
        self._settings = settings
        self._rules_for = functools.lru_cache(maxsize=RULES_CACHE_SIZE)(settings.rules_for)
        self._stop = stop
        self._metrics = metrics
        self._label = str(keys.shard)
        self._claim = client.register_script(CLAIM.source)
        self._ack = client.register_script(ACK.source)
        self._ack_growing = client.register_script(ACK_GROWING.source)
        self._ack_claim = client.register_script(ACK_CLAIM.source)
        self._tracer = BatchTracer() if settings.tracing else None
        self._versions = VersionMemory(client, keys)
        self._lookahead = LookAhead(settings.latest_lookahead, self._classify_queued)
        self._drop_superseded = client.register_script(DROP_SUPERSEDED.source)
        self._unsent: tuple[str, int] | None = None
        """(lease, size) of the batch this worker claimed and has not sent a byte of yet."""
        self._prefetched: tuple[str, list[Any]] | None = None
        """(lease, reply) of the claim ``ACK_CLAIM`` made with the last ack, not processed yet."""
        self.counts = _Counts()
        self._last_internal_error: str | None = None
        """The traceback of an ``internal`` dead letter is logged once per distinct error."""

    async def run(self) -> None:
        """Consume the shard until ``stop`` is set; raises only ``RelayFatalError``.

        Any other exception is a bug or a state nobody foresaw: the round is
        abandoned (its batch stays in flight and is redelivered) and the worker
        starts again after a backoff, so one bad shard never stops the relay.
        The traceback is logged once per distinct error, not once per retry.
        """
        await supervise(
            self._round,
            task="worker",
            backoff=Backoff(self._settings.retry_initial, self._settings.retry_max),
            stop=self._stop,
            shard=self.shard,
            expected=(redis.exceptions.RedisError,),
            expected_message="redis error",
            on_crash=self._crashed,
        )
        await self._finish_prefetched()

    async def _finish_prefetched(self) -> None:
        """Deliver the batch the last ack claimed, before a stop or a hand-over.

        ``ACK_CLAIM`` moves the next batch into the in-flight list with the ack;
        when the relay is told to stop, or decides to hand the shard over, while
        that script runs, the batch is in flight already. The worker finishes it
        (as it finishes any batch in flight) instead of leaving it to the next
        owner, whose redelivery would be sent latest-wins and skip versions.
        """
        if self._prefetched is None:
            return
        lease = self._leases.value(self.shard)
        if lease is None or self._prefetched[0] != lease:
            return
        try:
            redelivery, entries = await self._claim_batch(lease)
            await self._process(entries, redelivery, lease)
        except _LeaseLost:
            self._leases.lost(self.shard)
        except redis.exceptions.RedisError as exc:
            log.warning(
                "redis error",
                extra={"shard": self.shard, "error": repr(exc)},
            )

    def _crashed(self) -> None:
        self.counts.restarts += 1

    async def _round(self) -> None:
        """One step: hand the lease over, wait for it, or claim and process a batch."""
        if self._leases.should_release(self.shard):
            await self._finish_prefetched()
            await self._leases.release(self.shard)
            return
        lease = self._leases.value(self.shard)
        if lease is None:
            await self._leases.wait_acquired(self.shard, self._settings.idle_wait)
            return
        try:
            redelivery, entries = await self._claim_batch(lease)
            if entries:
                await self._process(entries, redelivery, lease)
            else:
                await self._redis.blpop([self.keys.bell], timeout=self._settings.idle_wait)
        except _LeaseLost:
            self._leases.lost(self.shard)

    async def _claim_batch(self, lease: str) -> tuple[bool, list[bytes]]:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] == lease:
            reply = prefetched[1]
            return bool(reply[0]), reply[1:]
        s = self._settings
        await self._drop_superseded_head(lease)
        try:
            reply = await self._claim(
                keys=[self.keys.queue, self.keys.inflight, self.keys.lease],
                args=[lease, s.max_batch, s.max_batch_bytes],
            )
        except redis.exceptions.ResponseError as exc:
            self._lookahead.forget()
            if str(exc).startswith(LEASE_LOST):
                raise _LeaseLost from None
            raise
        except redis.exceptions.RedisError:
            self._lookahead.forget()
            raise
        self._claimed(lease, reply)
        return bool(reply[0]), reply[1:]

    def _claimed(self, lease: str, reply: list[Any]) -> None:
        """Book a claim's reply: what left the queue's head, and a batch not sent yet."""
        self._lookahead.claimed(lease, 0 if reply[0] else len(reply) - 1)
        if not reply[0]:
            self._unsent = (lease, len(reply) - 1)

    def _may_claim_with_ack(self, lease: str) -> bool:
        """Whether the ack may claim the next batch too (``ACK_CLAIM``): when the next
        round would claim right away, with nothing to do first (no lease to hand over,
        no superseded head to drop) and the relay not stopping."""
        return (
            not self._stop.is_set()
            and self._leases.value(self.shard) == lease
            and not self._leases.should_release(self.shard)
            and self._lookahead.superseded_head(lease) is None
        )

    async def _process(self, entries: list[bytes], redelivery: bool, lease: str) -> None:
        if redelivery:
            log.info("redelivering in-flight", extra={"shard": self.shard, "count": len(entries)})
        items = [self._prepare(raw) for raw in entries]
        await self._supersede(items, redelivery, lease)
        outgoing = [_Outgoing(i, i.command) for i in items if i.command is not None]
        if not await self._deliver(outgoing, lease):
            return
        await self._acknowledge(items, lease)

    def _prepare(self, raw: bytes) -> _Item:
        """Decide what to do with one entry; never raises.

        An entry that breaks the envelope rules or the JSON profile is
        dead-lettered with the rule as its reason; any other exception while
        looking at it dead-letters it as ``internal`` (with the exception type),
        so one entry cannot stop its shard.
        """
        try:
            return self._decide(raw)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error(
                "cannot prepare an entry",
                extra={"shard": self.shard, "error": error},
                exc_info=error != self._last_internal_error,
            )
            self._last_internal_error = error
            item = _Item(raw, channel=channel_of(raw))
            item.dead_letter = self._dead_letter(item, "internal", error)
            return item

    def _decide(self, raw: bytes) -> _Item:
        item = _Item(raw)
        try:
            envelope = decode_envelope(raw)
        except EnvelopeDecodeError as exc:
            item.channel = channel_of(raw)
            item.dead_letter = self._dead_letter(item, exc.reason, str(exc))
            return item
        item.channel = channel = envelope.channel
        item.key, item.version = envelope.key, envelope.version
        item.ts = envelope.ts
        item.traceparent = envelope.traceparent
        rules = self._rules_for(channel)
        max_age = rules.max_age(envelope.ttl_ms)
        if max_age is not None and now_ms() - envelope.ts > max_age:
            item.expired = True
            return item
        item.command = publish_command(
            channel,
            raw,
            envelope.effective_idempotency_key,
            envelope.tags,
            envelope.version if rules.forward_version else None,
        )
        return item

    # -- freshness (relay/freshness.py) ---------------------------------------------

    async def _supersede(self, items: Sequence[_Item], redelivery: bool, lease: str) -> None:
        """Drop, on monotonic and latest channels, what a newer version of its key supersedes.

        A redelivered batch is sent latest-wins on every such channel (see
        ``relay.freshness``): an earlier attempt may have published any part of it.
        Unless this worker claimed it under this lease and never sent it (a Redis
        error before the first send): then nothing of it was published.
        """
        if redelivery and self._unsent == (lease, len(items)):
            redelivery = False
        rules_for = self._rules_for
        latest = False
        for item in items:
            channel = item.channel
            if item.command is None or channel is None:
                continue
            mode = rules_for(channel).freshness
            if mode is Freshness.ALL:
                continue
            latest = latest or mode is Freshness.LATEST
            item.candidate = Candidate(
                version_field(channel, item.key),
                item.version,
                redelivery or mode is Freshness.LATEST,
            )
        candidates = [item.candidate for item in items]
        if not any(candidates):
            return
        known = await self._versions.known(lease, (c.field for c in candidates if c))
        ahead: dict[str, int] = {}
        if redelivery:
            ahead = await self._newest_in_flight(len(items))
        if latest and self._lookahead.limit:
            queued = await self._lookahead.newest(self._redis, self.keys.queue)
            ahead = newest([*ahead.items(), *queued.items()])
        for item, stale in zip(items, supersede(candidates, known, ahead), strict=True):
            if stale:
                item.command, item.superseded = None, True

    async def _newest_in_flight(self, claimed: int) -> dict[str, int]:
        """The newest version per field in the in-flight list beyond the redelivered batch."""
        rest = await self._redis.lrange(self.keys.inflight, claimed, -1)
        found = []
        for raw in rest:
            entry = decode_key_version(raw)
            if entry is not None and self._may_supersede(entry.channel, entry.ttl_ms):
                found.append((version_field(entry.channel, entry.key), entry.version))
        return newest(found)

    def _may_supersede(self, channel: str, ttl_ms: int | None) -> bool:
        """An envelope of ``channel`` that is sure to be sent unless superseded itself."""
        rules = self._rules_for(channel)
        return rules.freshness is not Freshness.ALL and rules.max_age(ttl_ms) is None

    def _classify_queued(self, channel: str, ttl_ms: int | None) -> tuple[bool, bool]:
        """(on a latest channel, may stand in for older versions), for the look-ahead."""
        latest = self._rules_for(channel).freshness is Freshness.LATEST
        return latest, latest and self._may_supersede(channel, ttl_ms)

    async def _drop_superseded_head(self, lease: str) -> None:
        """Latest-wins: drop, without claiming them, the queued entries at the head that
        a newer version queued behind supersedes (``lookahead.LookAhead``)."""
        run = self._lookahead.superseded_head(lease)
        if run is None:
            return
        try:
            dropped = await self._drop_superseded(
                keys=[self.keys.queue, self.keys.lease, self.keys.state],
                args=[lease, run.count, run.head_sha1],
            )
        except redis.exceptions.RedisError as exc:
            self._lookahead.forget()
            if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(LEASE_LOST):
                raise _LeaseLost from None
            raise
        if not dropped:
            self._lookahead.forget()  # the head is not what was read: read again
            return
        self._lookahead.dropped(dropped)
        self.counts.superseded += dropped
        self._metrics.superseded.labels(self._label).inc(dropped)
        log.info("superseded", extra={"shard": self.shard, "count": dropped})

    def _retry_newest(
        self, outcome: WindowOutcome[_Outgoing], delivered: dict[str, int], result: BatchResult
    ) -> tuple[Sequence[_Outgoing], int, Retry | None]:
        """Before a retry, leave out what would publish a key's version after a newer one.

        After a code 100: what a version of its key delivered since supersedes
        (``delivered`` gathers, over the answers to one batch that asked for a
        retry, the newest version delivered per field). After an uncertain
        answer (timeout, lost connection, 5xx...): everything but the newest
        version of each key, as any part of the batch may have been published;
        unless the request never left (no connection): then it goes out whole.
        """
        pending, window, retry = outcome.pending, outcome.window, outcome.retry
        if retry is None or result.unsent:
            return pending, window, retry
        if retry.cause is RetryCause.CODE_100:
            accepted = [(c.field, c.version) for o in outcome.delivered if (c := o.item.candidate)]
            delivered.update(newest([*delivered.items(), *accepted]))
            kept, dropped = outdated(pending, delivered, lambda o: o.item.candidate)
        else:
            kept, dropped = latest_only(pending, lambda o: o.item.candidate)
        if not dropped:
            return pending, window, retry
        for sent in dropped:
            sent.item.superseded = True
        window = len(kept) if window > 1 else 1
        if retry.cause is RetryCause.CODE_100:
            gone = {id(o) for o in dropped}
            retried = retry.count - sum(id(o) in gone for o in pending[: retry.count])
        else:  # the batch failed: back off before the next one, whatever it holds now
            retried = min(window, len(kept))
        return tuple(kept), window, attrs.evolve(retry, count=retried) if retried else None

    # ---------------------------------------------------------------------------------

    async def _deliver(self, pending: Sequence[_Outgoing], lease: str) -> bool:
        """Send until every item is delivered or dead-lettered.

        Returns False when it gave up without finishing (stop requested after the
        first attempt, or the lease is no longer safely held); the items then stay
        in the in-flight list for the next owner or the next start.
        """
        backoff = Backoff(self._settings.retry_initial, self._settings.retry_max)
        failures = 0
        window = len(pending)
        first_attempt = True
        delivered: dict[str, int] = {}
        while pending:
            if self._leases.value(self.shard) != lease:
                log.warning(
                    "lease lost or about to expire, not sending", extra={"shard": self.shard}
                )
                return False
            if self._stop.is_set() and not first_attempt:
                return False
            first_attempt = False
            head = pending[:window]
            started = time.perf_counter()
            self._unsent = None
            result = await self._send(head)
            self._metrics.request_latency.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(head))
            outcome = settle_window(pending, window, result)
            for sent in outcome.delivered:
                sent.item.delivered = True
            for sent, reply in outcome.rejected:
                sent.item.dead_letter = self._dead_letter(
                    sent.item, "rejected", reply.message, code=reply.code
                )
            if outcome.refused is not None:
                item = outcome.refused.item
                item.dead_letter = self._dead_letter(item, "refused", result.reason)
            if outcome.isolating:
                log.warning(
                    "batch refused, isolating",
                    extra={"shard": self.shard, "size": window, "reason": result.reason},
                )
            pending, window, retry = self._retry_newest(outcome, delivered, result)
            if retry is not None:
                await self._retry_later(retry, backoff.delay(failures))
                failures += 1
            elif result.verdict is Verdict.REPLIES:
                failures = 0
        return True

    async def _send(self, head: Sequence[_Outgoing]) -> BatchResult:
        """One request to Centrifugo; with tracing on, in a span continuing the messages' traces."""
        commands = [o.command for o in head]
        if self._tracer is None:
            return await self._api.send_batch(commands)
        traceparents = [o.item.traceparent for o in head]
        return await self._tracer.send_batch(
            self._api, commands, traceparents, {"centrifugo_async.shard": self.shard}
        )

    async def _acknowledge(self, items: Sequence[_Item], lease: str) -> None:
        letters = [encode_dead_letter(i.dead_letter) for i in items if i.dead_letter]
        delivered = sum(i.delivered for i in items)
        expired = sum(i.expired for i in items)
        superseded = sum(i.superseded for i in items)
        versions = newest((c.field, c.version) for i in items if i.delivered and (c := i.candidate))
        k = self.keys
        keys = [k.inflight, k.lease, k.state, k.dlq, k.versions, k.versions_old]
        counts = [lease, len(items), delivered, expired]
        fresh: list[object] = [superseded, self._settings.version_memory, len(versions)]
        fresh += [part for pair in versions.items() for part in pair]
        try:
            try:
                await self._ack_and_claim(keys, [*counts, "1", *fresh, *letters], lease)
            except redis.exceptions.ResponseError as exc:
                if not str(exc).startswith(ACK_GROWS):
                    raise
                args = [*counts, "0", *fresh, *letters]
                if not await self._ack_when_room(keys, args, lease, len(letters)):
                    return
        except redis.exceptions.RedisError:
            self._versions.forget()  # the ack may have written versions after all
            self._lookahead.forget()  # and claimed the next batch
            raise
        self._versions.recorded(lease, versions)
        self.counts.delivered += delivered
        self.counts.expired += expired
        self.counts.dead_lettered += len(letters)
        self.counts.superseded += superseded
        self._record(items, delivered, expired)
        if expired:
            log.info("expired", extra={"shard": self.shard, "count": expired})
        if superseded:
            self._metrics.superseded.labels(self._label).inc(superseded)
            log.info("superseded", extra={"shard": self.shard, "count": superseded})

    async def _ack_and_claim(self, keys: list[str], args: list[object], lease: str) -> None:
        """``ACK``, or ``ACK_CLAIM`` keeping the next batch for the next round."""
        if not self._may_claim_with_ack(lease):
            await self._fenced(self._ack, keys, args)
            return
        s = self._settings
        reply = await self._fenced(
            self._ack_claim, [*keys, self.keys.queue], [s.max_batch, s.max_batch_bytes, *args]
        )
        self._claimed(lease, reply)
        self._prefetched = (lease, reply)

    async def _ack_when_room(
        self, keys: list[str], args: list[object], lease: str, letters: int
    ) -> bool:
        """Run ``ACK_GROWING``, retrying while Redis is at ``maxmemory``.

        Returns False, leaving the batch in flight for the next round or the
        next owner, when the relay stops or the lease is no longer safely held.
        """
        backoff = Backoff(self._settings.retry_initial, self._settings.retry_max)
        async for attempt in backoff.attempts(self._stop):
            if self._leases.value(self.shard) != lease:
                return False
            try:
                await self._fenced(self._ack_growing, keys, args)
            except redis.exceptions.OutOfMemoryError:
                log.warning(
                    "dead letters wait for memory "
                    "(Redis is at maxmemory; the batch stays in flight)",
                    extra={"shard": self.shard, "count": letters, "retry_in": attempt.delay},
                )
                continue
            return True
        return False

    @staticmethod
    async def _fenced(script: Any, keys: list[str], args: list[object]) -> Any:
        """Run a lease-fenced script; a ``LEASE_LOST`` reply raises ``_LeaseLost``."""
        try:
            return await script(keys=keys, args=args)
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(LEASE_LOST):
                raise _LeaseLost from None
            raise

    def _record(self, items: Sequence[_Item], delivered: int, expired: int) -> None:
        metrics = self._metrics
        metrics.published.labels(self._label).inc(delivered)
        if expired:
            metrics.expired.labels(self._label).inc(expired)
        received_ms = now_ms()
        metrics.enqueue_to_accept.observe_many(
            max(0, received_ms - item.ts) / 1000 for item in items if item.delivered
        )
        if len(items) > delivered + expired:
            for item in items:
                if item.dead_letter is not None:
                    metrics.dead_lettered.labels(item.dead_letter.reason).inc()

    def _dead_letter(
        self, item: _Item, reason: str, error: str, code: int | None = None
    ) -> DeadLetter:
        log.warning(
            "dead-lettered",
            extra={
                "shard": self.shard,
                "reason": reason,
                "code": code,
                "channel": item.channel,
                "error": error,
            },
        )
        return DeadLetter.for_payload(
            item.raw,
            shard=self.shard,
            reason=reason,
            error=error,
            code=code,
            channel=item.channel,
            relay=self._leases.owner,
        )

    async def _retry_later(self, retry: Retry, delay: float) -> None:
        self.counts.retries += 1
        self._metrics.retried.labels(retry.cause.value).inc()
        log.warning(
            "retrying",
            extra={
                "shard": self.shard,
                "count": retry.count,
                "cause": retry.cause.value,
                "reason": retry.reason,
                "retry_in": delay,
            },
        )
        await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the relay is asked to stop."""
        await wait_for_event(self._stop, seconds)
