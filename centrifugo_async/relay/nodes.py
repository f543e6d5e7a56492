"""``NodeSet``: the relay's requests spread over several Centrifugo nodes, order kept per shard.

Centrifugo nodes that share one engine (Redis, Nats) are interchangeable for
publishing: a publication accepted by any of them reaches the subscribers of
every node, and idempotency results live in the engine, so a batch retried on
another node is still deduplicated. What must not happen is two batches of one
shard in flight at once, on two nodes, where the second could be applied first.

Each shard therefore gets its own route (``api_for``): a ``CentrifugoAPI`` over a
transport that sends to **one** node per request. The worker sends its next
batch only after the previous one was answered or timed out, so a shard has at
most one request anywhere, whichever nodes it uses. Shard ``N`` prefers node
``N % n`` (the shards spread evenly); a node that fails a request (a transport
error or HTTP 5xx) is passed over by every shard for ``cooldown`` seconds, so
the retry of that batch, and the batches after it, go to the next node in the
shard's order. After the cooldown the shard returns to its preferred node,
again between two requests. When every node is cooling down the one that
failed longest ago is tried.

A request that timed out may still be executing on the node that was left;
that is the same window as a retry on a fresh connection to one node, covered
by the same idempotency keys (see ``docs/scaling.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import attrs

from ..logs import mask_url
from .api import BatchResult, CentrifugoAPI, Verdict, open_transport
from .metrics import RelayMetrics
from .transport import Response, Transport, TransportError

__all__ = ["NODE_COOLDOWN", "Node", "NodeSet"]

log = logging.getLogger("centrifugo_async.relay")

NODE_COOLDOWN = 5.0
"""Seconds a node that failed a request is passed over by every shard."""


@attrs.define
class Node:
    """One Centrifugo node: its transport and when it may be used again after a failure."""

    label: str
    """The API URL, password masked: log fields and the ``node`` metric label."""
    transport: Transport
    failed_at: float | None = None
    """Monotonic time of its last failed request; None once a request succeeds."""


class NodeSet:
    """Centrifugo nodes behind one relay; owns and closes their transports.

    ``nodes`` are ``(label, transport)`` pairs in the configured order.
    """

    def __init__(
        self,
        nodes: Sequence[tuple[str, Transport]],
        *,
        cooldown: float = NODE_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
        metrics: RelayMetrics | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a NodeSet needs at least one node")
        self.nodes = [Node(label, transport) for label, transport in nodes]
        self._cooldown = cooldown
        self._clock = clock
        self._counters = (
            [
                {
                    True: metrics.node_requests.labels(node.label, "ok"),
                    False: metrics.node_requests.labels(node.label, "failed"),
                }
                for node in self.nodes
            ]
            if metrics is not None
            else []
        )
        """Per node, its request counters by success (looked up once, counted per request)."""

    @classmethod
    def open(
        cls,
        api_urls: Sequence[str],
        api_key: str,
        *,
        timeout: float,
        metrics: RelayMetrics | None = None,
    ) -> NodeSet:
        """One ``open_transport`` per URL."""
        return cls(
            [(mask_url(url), open_transport(url, api_key, timeout=timeout)) for url in api_urls],
            metrics=metrics,
        )

    def pick(self, shard: int) -> int:
        """The node ``shard`` sends its next request to (an index into ``nodes``).

        The first node, from the shard's preferred one on, that is not cooling
        down; when all are, the one whose failure is oldest.
        """
        count = len(self.nodes)
        order = [(shard + step) % count for step in range(count)]
        now = self._clock()
        for index in order:
            failed_at = self.nodes[index].failed_at
            if failed_at is None or now - failed_at >= self._cooldown:
                return index
        return min(order, key=lambda index: self.nodes[index].failed_at or 0.0)

    def api_for(self, shard: int) -> CentrifugoAPI:
        """The API ``shard``'s worker sends through; its ``aclose`` leaves the nodes open."""
        return CentrifugoAPI(_ShardRoute(self, shard))

    def record(self, index: int, ok: bool) -> None:
        """Note how a request to node ``index`` went (a failure starts its cooldown)."""
        node = self.nodes[index]
        if ok:
            node.failed_at = None
        else:
            if node.failed_at is None and len(self.nodes) > 1:
                log.warning("Centrifugo node failed, passing over it", extra={"api": node.label})
            node.failed_at = self._clock()
        if self._counters:
            self._counters[index][ok].inc()

    async def check(self) -> BatchResult:
        """Probe every node at once: proves each URL and the key before consuming.

        A node refusing the key or the URL raises ``RelayFatalError``, as with one
        node. Otherwise the answer is an answering node's (nodes that do not
        answer are logged and passed over until they do), or, when none answers,
        a retry naming each node's reason.
        """
        results = await asyncio.gather(*(CentrifugoAPI(n.transport).check() for n in self.nodes))
        answering = [r for r in results if r.verdict is Verdict.REPLIES]
        for index, (node, result) in enumerate(zip(self.nodes, results, strict=True)):
            self.record(index, result.verdict is Verdict.REPLIES)
            if answering and result.verdict is not Verdict.REPLIES:
                log.warning(
                    "Centrifugo node not answering at start-up",
                    extra={"api": node.label, "reason": result.reason},
                )
        if answering:
            return answering[0]
        if len(results) == 1:
            return results[0]
        reasons = "; ".join(
            f"{n.label}: {r.reason}" for n, r in zip(self.nodes, results, strict=True)
        )
        return attrs.evolve(results[0], reason=reasons)

    async def aclose(self) -> None:
        await asyncio.gather(*(node.transport.aclose() for node in self.nodes))


class _ShardRoute:
    """The transport of one shard: each request to the node ``NodeSet.pick`` names."""

    def __init__(self, nodes: NodeSet, shard: int) -> None:
        self._nodes = nodes
        self._shard = shard

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        index = self._nodes.pick(self._shard)
        try:
            response = await self._nodes.nodes[index].transport.post(path, body, headers)
        except TransportError:
            self._nodes.record(index, ok=False)
            raise
        self._nodes.record(index, ok=response.status < 500)
        return response

    async def aclose(self) -> None:
        """The nodes' transports are the ``NodeSet``'s to close."""
