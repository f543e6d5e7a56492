"""``ShardWorker``: moves one shard's messages into Centrifugo, in order, at least once.

One batch in flight per shard. Each round:

1. ``CLAIM`` (fenced by the lease) returns the head of the in-flight list if it is
   not empty (left by a crash or a failed ack), else moves up to ``max_batch``
   messages from the queue to the in-flight list. The batch is as large as the
   backlog allows: 1 message when idle, ``max_batch`` when behind.
2. Entries that are not valid envelopes, or break the JSON profile every SDK
   can decode (``protocol.ijson``), are dead-lettered with the rule they broke
   as the reason; expired ones (past ``ttl_ms``) are counted; the rest become
   publish commands whose ``data`` is the envelope bytes, unchanged.
3. The commands go to ``/api/batch`` with ``parallel: false``. Retryable failures
   are retried with backoff while the shard waits; rejected commands are
   dead-lettered; a refused body is resent one command at a time to isolate it
   (each answer is settled by ``window.settle_window``).
4. ``ACK`` (fenced) removes the batch from the in-flight list and records dead
   letters and counters in one step. Claim and ack keep working when Redis is
   at ``maxmemory`` (see ``protocol.scripts``), except an ack whose dead letters
   would grow memory: that one is retried with backoff until Redis has room,
   the batch staying in flight meanwhile, so no dead letter is ever dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs
import redis.exceptions

from .._clock import now_ms
from .._retry import Backoff, wait_for_event
from ..connection import AsyncRedisClient
from ..exceptions import EnvelopeDecodeError, RelayFatalError
from ..protocol.deadletter import DeadLetter, encode_dead_letter
from ..protocol.envelope import channel_of, decode_envelope
from ..protocol.keys import ShardKeys
from ..protocol.scripts import ACK, ACK_GROWING, ACK_GROWS, CLAIM, LEASE_LOST
from .api import BatchResult, CentrifugoAPI, Verdict, publish_command
from .lease import LeaseKeeper
from .metrics import RelayMetrics
from .settings import RelaySettings
from .tracing import BatchTracer
from .window import Retry, settle_window

__all__ = ["ShardWorker"]

log = logging.getLogger("centrifugo_async.relay")


@attrs.define
class _Item:
    """One claimed entry and what became of it."""

    raw: bytes
    channel: str | None = None
    ts: int = 0
    traceparent: str | None = None
    command: bytes | None = None
    delivered: bool = False
    expired: bool = False
    dead_letter: DeadLetter | None = None


@attrs.frozen
class _Outgoing:
    """An item that became a publish command, waiting to be accepted."""

    item: _Item
    command: bytes


@attrs.define
class _Counts:
    delivered: int = 0
    expired: int = 0
    dead_lettered: int = 0
    retries: int = 0
    restarts: int = 0


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
        self._stop = stop
        self._metrics = metrics
        self._label = str(keys.shard)
        self._claim = client.register_script(CLAIM.source)
        self._ack = client.register_script(ACK.source)
        self._ack_growing = client.register_script(ACK_GROWING.source)
        self._tracer = BatchTracer() if settings.tracing else None
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
        backoff = Backoff(self._settings.retry_initial, self._settings.retry_max)
        attempts = backoff.attempts(self._stop)
        last_crash: str | None = None
        async for attempt in attempts:
            try:
                await self._round()
            except redis.exceptions.RedisError as exc:
                log.warning(
                    "redis error",
                    extra={"shard": self.shard, "error": str(exc), "retry_in": attempt.delay},
                )
            except RelayFatalError:
                raise
            except Exception as exc:
                crash = f"{type(exc).__name__}: {exc}"
                self.counts.restarts += 1
                log.error(
                    "worker crashed, restarting",
                    extra={"shard": self.shard, "error": crash, "retry_in": attempt.delay},
                    exc_info=crash != last_crash,
                )
                last_crash = crash
            else:
                attempts.succeeded()
                last_crash = None

    async def _round(self) -> None:
        """One step: hand the lease over, wait for it, or claim and process a batch."""
        if self._leases.should_release(self.shard):
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
        s = self._settings
        try:
            reply = await self._claim(
                keys=[self.keys.queue, self.keys.inflight, self.keys.lease],
                args=[lease, s.max_batch, s.max_batch_bytes],
            )
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(LEASE_LOST):
                raise _LeaseLost from None
            raise
        return bool(reply[0]), reply[1:]

    async def _process(self, entries: list[bytes], redelivery: bool, lease: str) -> None:
        if redelivery:
            log.info("redelivering in-flight", extra={"shard": self.shard, "count": len(entries)})
        items = [self._prepare(raw) for raw in entries]
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
        item.ts = envelope.ts
        item.traceparent = envelope.traceparent
        settings = self._settings
        max_age = settings.max_age_ms(channel, envelope.ttl_ms)
        if max_age is not None and now_ms() - envelope.ts > max_age:
            item.expired = True
            return item
        item.command = publish_command(
            channel,
            raw,
            envelope.effective_idempotency_key,
            envelope.tags,
            envelope.version if settings.forwards_version(channel) else None,
        )
        return item

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
            pending, window = outcome.pending, outcome.window
            if outcome.retry is not None:
                await self._retry_later(outcome.retry, backoff.delay(failures))
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
        keys = [self.keys.inflight, self.keys.lease, self.keys.state, self.keys.dlq]
        counts = [lease, len(items), delivered, expired]
        try:
            await self._fenced(self._ack, keys, [*counts, "1", *letters])
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith(ACK_GROWS):
                raise
            if not await self._ack_when_room(keys, [*counts, "0", *letters], lease, len(letters)):
                return
        self.counts.delivered += delivered
        self.counts.expired += expired
        self.counts.dead_lettered += len(letters)
        self._record(items, delivered, expired)
        if expired:
            log.info("expired", extra={"shard": self.shard, "count": expired})

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
    async def _fenced(script: Any, keys: list[str], args: list[object]) -> None:
        """Run a lease-fenced script; a ``LEASE_LOST`` reply raises ``_LeaseLost``."""
        try:
            await script(keys=keys, args=args)
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
        for item in items:
            if item.delivered:
                metrics.enqueue_to_accept.observe(max(0, received_ms - item.ts) / 1000)
            elif item.dead_letter is not None:
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
