"""A stand-in for centrifuge-python's Client and Subscription, for flow tests only.

It calls the event handler the way the SDK does (``await events.on_...(ctx)``)
but only when a test says so, which makes races (a publication during a load,
a resubscribe during a fetch) exact and repeatable. The behaviour against the
real SDK and server is tested in ``test_synced.py``.
"""

from __future__ import annotations

import enum
from types import SimpleNamespace
from typing import Any


class State(enum.Enum):
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBING = "subscribing"
    SUBSCRIBED = "subscribed"


class Handler:
    """The SDK's default handler: every event is a no-op."""

    async def on_subscribing(self, ctx: Any) -> None: ...
    async def on_subscribed(self, ctx: Any) -> None: ...
    async def on_unsubscribed(self, ctx: Any) -> None: ...
    async def on_publication(self, ctx: Any) -> None: ...
    async def on_join(self, ctx: Any) -> None: ...
    async def on_leave(self, ctx: Any) -> None: ...
    async def on_error(self, ctx: Any) -> None: ...


class FakeSubscription:
    def __init__(self, channel: str, events: Any = None, **options: Any) -> None:
        self.channel = channel
        self.events = events or Handler()
        self.options = options
        self.state = State.UNSUBSCRIBED
        self.subscribe_calls = 0
        self.unsubscribe_calls = 0
        self.seq = 0

    async def subscribe(self) -> None:
        self.subscribe_calls += 1
        if self.state is State.UNSUBSCRIBED:
            self.state = State.SUBSCRIBING

    async def unsubscribe(self) -> None:
        self.unsubscribe_calls += 1
        self.state = State.UNSUBSCRIBED

    async def subscribed(self, *, was_recovering: bool = False, recovered: bool = False) -> None:
        """The server confirmed a subscribe (or a resubscribe)."""
        self.state = State.SUBSCRIBED
        await self.events.on_subscribed(
            SimpleNamespace(
                channel=self.channel, was_recovering=was_recovering, recovered=recovered
            )
        )

    async def ended(self, code: int, reason: str) -> None:
        """The subscription went to the unsubscribed state (server or app)."""
        self.state = State.UNSUBSCRIBED
        await self.events.on_unsubscribed(SimpleNamespace(code=code, reason=reason))

    async def publish(self, key: str, version: int, data: Any = None, **fields: Any) -> None:
        """Deliver an envelope for ``key`` at ``version`` (``deleted=True`` for a delete)."""
        self.seq += 1
        envelope = {
            "v": 1,
            "channel": self.channel,
            "key": key,
            "version": version,
            "seq": self.seq,
            "shard": 0,
            "ts": 1,
            "data": {"v": version} if data is None and not fields.get("deleted") else data,
            **fields,
        }
        await self.events.on_publication(SimpleNamespace(pub=SimpleNamespace(data=envelope)))


class FakeClient:
    def __init__(self) -> None:
        self.subscriptions: dict[str, FakeSubscription] = {}

    def new_subscription(
        self, channel: str, events: Any = None, **options: Any
    ) -> FakeSubscription:
        assert channel not in self.subscriptions, "duplicate subscription"
        sub = FakeSubscription(channel, events, **options)
        self.subscriptions[channel] = sub
        return sub

    def remove_subscription(self, sub: FakeSubscription) -> None:
        del self.subscriptions[sub.channel]
