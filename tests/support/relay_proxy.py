"""A recording proxy between relays and the real Centrifugo: who sent what, under which lease.

Subscribers only show what Centrifugo published; they cannot tell a relay that
sent after losing its lease from the rightful owner, and Centrifugo's idempotency
window hides a message sent twice. This proxy sits in front of the real
Centrifugo's API and records every publish command each relay sends::

    async with RecordingProxy(centrifugo.api_url, centrifugo.api_key, redis_url) as proxy:
        url = await proxy.endpoint("relay-a")        # give this to relay-a as --api-url
        ...
        assert proxy.log.stale() == []               # nothing sent without the lease
        assert proxy.log.duplicates() == []          # nothing sent twice by one owner

**Who sent it.** Every relay gets an endpoint of its own (a listening port), so
the proxy knows the sender without any help from the relay. **Under which
lease.** When a batch arrives the proxy reads the shard's lease from Redis
(``"<relay id>#<epoch>"``) before doing anything else with it; a batch from a
relay that is not the lease's owner at that moment is a *stale send*. (A relay
that lost the shard and won it back has a new epoch; that case is the lease
scripts' to refuse and is tested on them directly.)

**Duplicates visible.** With ``unique_idempotency`` (the default) the proxy gives
every command it forwards an idempotency key of its own (the relay's key plus an
attempt number), so Centrifugo publishes every copy and a re-send reaches the
subscribers instead of being absorbed by Centrifugo's 5-minute idempotency window.

**Holding a batch.** ``proxy.hold(relay=..., shard=...)`` catches the next
matching batch and keeps it until the test decides: forward it (now, or after a
takeover: a late arrival), answer it with an HTTP status, or drop the
connection. A held batch is a batch the relay has claimed and not acknowledged.

Each command's answer (accepted, an error code, an HTTP status, no answer) is
recorded, as far as the proxy could pass it back to the relay, so the log can
tell a legitimate repeat from a duplicate:

- *retry*: the same owner (relay and epoch) sends it again after an answer that
  did not accept it;
- *redelivery*: another owner, or a later epoch, sends it again (a takeover or a
  restart serves the in-flight list first);
- *duplicate*: the same owner sends it again after Centrifugo accepted it: a bug.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import attrs
import redis.asyncio

from centrifugo_async.relay.api import open_transport
from centrifugo_async.relay.transport import Response, Transport, TransportError
from tests.support.fake_centrifugo import BATCH_PATH, Exchange, FakeCentrifugo

__all__ = [
    "ACCEPTED",
    "Decision",
    "Hold",
    "Proxied",
    "RecordingProxy",
    "Send",
    "SendLog",
]

ACCEPTED = "accepted"
NO_ANSWER = "no answer"
PENDING = "pending"
UPSTREAM_TIMEOUT = 10.0


@attrs.define(eq=False)
class Send:
    """One publish command as a relay sent it."""

    relay: str
    """The relay whose endpoint it arrived on."""
    request: int
    """Index of its request in ``RecordingProxy.requests``."""
    shard: int
    seq: int
    key: str
    version: int
    channel: str
    lease: str | None
    """The shard's lease in Redis when the request arrived (``owner#epoch``), or None."""
    answer: str = PENDING
    """``accepted``, ``error <code>``, ``http <status>``, ``no answer`` or ``pending``."""
    forwarded_late: bool = False
    """Held by the test and forwarded after the sender's lease had moved on."""

    @property
    def owner(self) -> tuple[str, str | None]:
        """(relay, lease) identifies one tenure of one relay on the shard."""
        return self.relay, self.lease

    @property
    def stale(self) -> bool:
        """Sent by a relay that did not hold the shard's lease when it arrived."""
        return self.lease is None or self.lease.rpartition("#")[0] != self.relay

    @property
    def position(self) -> tuple[int, int]:
        return self.shard, self.seq


@attrs.define(eq=False)
class Proxied:
    """One batch request from a relay."""

    index: int
    relay: str
    shard: int
    """The shard of its commands (a relay sends one shard per batch)."""
    sends: list[Send]
    arrived: float
    """``time.monotonic()`` when it arrived."""

    @property
    def seqs(self) -> list[int]:
        return [s.seq for s in self.sends]


Decision = Callable[[Exchange], Awaitable[str]]
"""How the test answers a held batch; returns what the relay was told."""


class Hold:
    """The next batch matching (relay, shard), kept until the test decides what happens to it."""

    def __init__(self, relay: str | None, shard: int | None) -> None:
        self.relay = relay
        self.shard = shard
        self.request: Proxied | None = None
        self._cancelled = False
        self._arrived = asyncio.Event()
        self._decision: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()

    def catch(self, request: Proxied) -> bool:
        """Take ``request`` if it is the one this hold waits for."""
        if (
            self._cancelled
            or self.request is not None
            or self.relay not in (None, request.relay)
            or self.shard not in (None, request.shard)
        ):
            return False
        self.request = request
        self._arrived.set()
        return True

    async def arrived(self, within: float) -> Proxied:
        """Wait until a matching batch is held; returns it."""
        async with asyncio.timeout(within):
            await self._arrived.wait()
        assert self.request is not None
        return self.request

    def forward(self) -> None:
        """Send it on to Centrifugo now and pass the answer back."""
        self._decide(None)

    def cancel(self) -> None:
        """Hold nothing more: a batch already held is forwarded, none is caught any more."""
        self._cancelled = True
        self._decide(None)

    def answer(self, status: int, body: bytes = b"unavailable") -> None:
        """Answer it with ``status`` instead of forwarding it."""

        async def reply(exchange: Exchange) -> str:
            await exchange.reply(status, body, content_type="text/plain")
            return f"http {status}"

        self._decide(reply)

    def drop(self) -> None:
        """Close its connection without an answer."""
        self._decide(_drop)

    async def decision(self, exchange: Exchange) -> Decision | None:
        """What the test decided (None: forward); closing the proxy drops the batch."""
        closing = asyncio.ensure_future(exchange.fake.closing.wait())
        try:
            await asyncio.wait((self._decision, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        return self._decision.result() if self._decision.done() else _drop

    def _decide(self, decision: Decision | None) -> None:
        if not self._decision.done():
            self._decision.set_result(decision)


async def _drop(exchange: Exchange) -> str:
    exchange.drop()
    return NO_ANSWER


class SendLog:
    """Every publish command the relays sent, in arrival order, and what that shows."""

    def __init__(self, sends: Iterable[Send] = ()) -> None:
        self.sends: list[Send] = list(sends)

    def __iter__(self) -> Iterator[Send]:
        return iter(self.sends)

    def __len__(self) -> int:
        return len(self.sends)

    def by(self, relay: str, *, since: int = 0) -> list[Send]:
        """What ``relay`` sent in requests numbered ``since`` and later."""
        return [s for s in self.sends if s.relay == relay and s.request >= since]

    def stale(self) -> list[Send]:
        """Commands sent by a relay that did not hold the shard's lease when they arrived."""
        return [s for s in self.sends if s.stale]

    def repeats(self) -> dict[tuple[int, int], list[Send]]:
        """Every (shard, seq) sent more than once, with all its sends in order."""
        by_position: dict[tuple[int, int], list[Send]] = defaultdict(list)
        for send in self.sends:
            by_position[send.position].append(send)
        return {p: sends for p, sends in by_position.items() if len(sends) > 1}

    def classified(self) -> dict[str, list[Send]]:
        """Every repeated send as ``retry``, ``redelivery`` or ``duplicate`` (module docstring)."""
        kinds: dict[str, list[Send]] = {"retry": [], "redelivery": [], "duplicate": []}
        for sends in self.repeats().values():
            for n, send in enumerate(sends[1:], start=1):
                earlier = sends[:n]
                same_owner = [e for e in earlier if e.owner == send.owner]
                if any(e.answer == ACCEPTED for e in same_owner):
                    kinds["duplicate"].append(send)
                elif len(same_owner) < len(earlier):
                    kinds["redelivery"].append(send)
                else:
                    kinds["retry"].append(send)
        return kinds

    def duplicates(self) -> list[Send]:
        """Sent again by the same owner after Centrifugo had accepted it: never legitimate."""
        return self.classified()["duplicate"]

    def redeliveries(self) -> list[Send]:
        return self.classified()["redelivery"]

    def accepted_order(self) -> dict[int, list[int]]:
        """Per shard, the seqs in the order Centrifugo first accepted them."""
        seen: set[tuple[int, int]] = set()
        order: dict[int, list[int]] = defaultdict(list)
        for send in self.sends:
            if send.answer == ACCEPTED and send.position not in seen:
                seen.add(send.position)
                order[send.shard].append(send.seq)
        return dict(order)

    def order_violations(self) -> dict[int, list[int]]:
        """Per shard, the seqs first accepted after a higher seq of the same shard."""
        violations: dict[int, list[int]] = {}
        for shard, seqs in self.accepted_order().items():
            highest, late = 0, []
            for seq in seqs:
                if seq < highest:
                    late.append(seq)
                highest = max(highest, seq)
            if late:
                violations[shard] = late
        return violations

    def never_accepted(self, last_seq: dict[int, int]) -> dict[int, list[int]]:
        """Per shard, the seqs in ``1..last_seq[shard]`` that Centrifugo never accepted."""
        accepted = self.accepted_order()
        gaps = {}
        for shard, last in last_seq.items():
            missing = sorted(set(range(1, last + 1)) - set(accepted.get(shard, ())))
            if missing:
                gaps[shard] = missing
        return gaps

    def summary(self) -> dict[str, int]:
        kinds = self.classified()
        return {
            "sent": len(self.sends),
            "stale": len(self.stale()),
            "duplicates": len(kinds["duplicate"]),
            "redeliveries": len(kinds["redelivery"]),
            "retries": len(kinds["retry"]),
            "out_of_order": sum(len(v) for v in self.order_violations().values()),
        }


class RecordingProxy:
    """Forwards relays' batches to Centrifugo's API and records them (module docstring)."""

    def __init__(
        self,
        upstream_api_url: str,
        api_key: str,
        redis_url: str,
        *,
        prefix: str = "centrifugo.publish",
        unique_idempotency: bool = True,
    ) -> None:
        self.upstream_api_url = upstream_api_url
        self.api_key = api_key
        self.prefix = prefix
        self.unique_idempotency = unique_idempotency
        self.requests: list[Proxied] = []
        self.log = SendLog()
        self.problems: list[str] = []
        """Requests the proxy could not attribute (a batch mixing shards): answered 500."""
        self._redis = redis.asyncio.Redis.from_url(redis_url)
        self._upstream: Transport = open_transport(
            upstream_api_url, api_key, timeout=UPSTREAM_TIMEOUT
        )
        self._endpoints: dict[str, FakeCentrifugo] = {}
        self._holds: list[Hold] = []
        self._attempts = 0
        self._changed = asyncio.Event()

    async def endpoint(self, relay: str) -> str:
        """The API URL to give the relay called ``relay`` (its own port on this proxy)."""
        if relay not in self._endpoints:
            server = FakeCentrifugo(api_key=self.api_key)
            server.default = server.probe = _Relaying(self, relay)
            self._endpoints[relay] = await server.start()
        return self._endpoints[relay].url

    def hold(self, *, relay: str | None = None, shard: int | None = None) -> Hold:
        """Keep the next batch from ``relay`` for ``shard`` (None: any) until told."""
        hold = Hold(relay, shard)
        self._holds.append(hold)
        return hold

    def mark(self) -> int:
        """The number of the next request: ``log.by(relay, since=mark)`` looks after it."""
        return len(self.requests)

    def batches(self, relay: str | None = None, shard: int | None = None) -> list[Proxied]:
        return [r for r in self.requests if relay in (None, r.relay) and shard in (None, r.shard)]

    async def wait_for(self, condition: Callable[[], bool], within: float) -> bool:
        """Wait until ``condition()`` holds, checking after every request and answer.

        Returns False instead of raising when ``within`` seconds pass first, so
        the caller can report what it saw.
        """
        try:
            async with asyncio.timeout(within):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return condition()
        return True

    async def aclose(self) -> None:
        for hold in self._holds:
            hold.drop()
        for server in self._endpoints.values():
            await server.aclose()
        await self._upstream.aclose()
        await self._redis.aclose()

    async def __aenter__(self) -> RecordingProxy:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _relay(self, relay: str, exchange: Exchange) -> None:
        request = exchange.request
        if request.path != BATCH_PATH or not request.is_batch:
            await exchange.reply(404, b"404 page not found", content_type="text/plain")
            return
        if request.is_probe:
            await self._forward(exchange, request.body, [])
            return
        shards = sorted({p["data"]["shard"] for p in request.publications})
        if len(shards) != 1:
            problem = f"{relay} sent one batch for several shards: {shards}"
            self.problems.append(problem)
            await exchange.reply(500, problem.encode(), content_type="text/plain")
            return
        record = await self._record(relay, shards[0], request.publications)
        hold = next((h for h in self._holds if h.catch(record)), None)
        if hold is not None:
            decision = await hold.decision(exchange)
            if decision is not None:
                self._answer(record.sends, [await decision(exchange)] * len(record.sends))
                return
            lease = await self._lease(record.shard)
            for send in record.sends:
                send.forwarded_late = send.lease != lease
        await self._forward(exchange, self._rewrite(request.body), record.sends)

    async def _record(self, relay: str, shard: int, publications: list[dict[str, Any]]) -> Proxied:
        envelopes = [p["data"] for p in publications]
        lease = await self._lease(shard)
        index = len(self.requests)
        sends = [
            Send(relay, index, shard, e["seq"], e["key"], e["version"], p["channel"], lease)
            for p, e in zip(publications, envelopes, strict=True)
        ]
        record = Proxied(index, relay, shard, sends, time.monotonic())
        self.requests.append(record)
        self.log.sends.extend(sends)
        self._changed.set()
        return record

    async def _lease(self, shard: int) -> str | None:
        value = await self._redis.get(f"{{{self.prefix}:{shard}}}:lease")
        return value.decode() if value is not None else None

    def _rewrite(self, body: bytes) -> bytes:
        if not self.unique_idempotency:
            return body
        decoded = json.loads(body)
        for command in decoded["commands"]:
            publish = command.get("publish")
            if isinstance(publish, dict) and "idempotency_key" in publish:
                self._attempts += 1
                publish["idempotency_key"] = f"{publish['idempotency_key']}~{self._attempts}"
        return json.dumps(decoded).encode()

    async def _forward(self, exchange: Exchange, body: bytes, sends: list[Send]) -> None:
        try:
            response = await self._upstream.post("/batch", body)
        except TransportError as exc:
            response = Response(502, f"proxy: upstream failed: {exc}".encode())
        self._answer(sends, _answers(response, len(sends)))
        try:
            await exchange.reply(response.status, response.body)
        except ConnectionError:
            self._answer(sends, [NO_ANSWER] * len(sends))
            raise

    def _answer(self, sends: list[Send], answers: list[str]) -> None:
        for send, answer in zip(sends, answers, strict=True):
            send.answer = answer
        self._changed.set()


@attrs.frozen
class _Relaying:
    """The behaviour of every request on one relay's endpoint."""

    proxy: RecordingProxy
    relay: str

    async def respond(self, exchange: Exchange) -> None:
        await self.proxy._relay(self.relay, exchange)


def _answers(response: Response, count: int) -> list[str]:
    """What Centrifugo's response said about each of ``count`` commands."""
    if response.status != 200:
        return [f"http {response.status}"] * count
    try:
        decoded = json.loads(response.body)
    except ValueError:
        return ["unreadable reply"] * count
    if decoded.get("error"):
        return [f"error {decoded['error'].get('code')}"] * count
    replies = decoded.get("replies") or []
    if len(replies) != count:
        return ["wrong reply count"] * count
    return [f"error {r['error'].get('code')}" if r.get("error") else ACCEPTED for r in replies]
