"""A real WebSocket subscriber (centrifuge-python) that records what it receives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from centrifuge import (
    Client,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
)


class _Recorder(SubscriptionEventHandler):
    def __init__(self, sink: Subscriber) -> None:
        self._sink = sink

    async def on_publication(self, ctx: PublicationContext) -> None:
        self._sink.received.append(ctx.pub.data)
        self._sink.changed.set()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self._sink.subscribed_events.append(ctx)
        if len(self._sink.subscribed_events) >= len(self._sink.channels):
            self._sink.all_subscribed.set()


class Subscriber:
    """Subscribes to channels and keeps every publication's ``data`` in arrival order."""

    def __init__(self, ws_url: str, channels: Iterable[str]) -> None:
        self.client = Client(ws_url)
        self.channels = list(channels)
        self.received: list[Any] = []
        self.subscribed_events: list[SubscribedContext] = []
        self.changed = asyncio.Event()
        self.all_subscribed = asyncio.Event()

    async def __aenter__(self) -> Subscriber:
        await self.client.connect()
        for channel in self.channels:
            sub = self.client.new_subscription(
                channel, events=_Recorder(self), recoverable=True, positioned=True
            )
            await sub.subscribe()
        await asyncio.wait_for(self.all_subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def wait_for(self, count: int, within: float) -> list[Any]:
        """Wait until ``count`` publications arrived (or fail after ``within`` s)."""
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.received

    async def settle(self, quiet: float = 0.5, within: float = 10.0) -> list[Any]:
        """Wait until nothing new arrived for ``quiet`` seconds."""
        async with asyncio.timeout(within):
            while True:
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), quiet)
                except TimeoutError:
                    return self.received
