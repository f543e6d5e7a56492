"""SyncedSubscription's flow, driven event by event through a fake SDK (tests/client/fakes.py).

Deletes, the buffer cap, superseded and closed loads, ``reload_key`` races, the
state and ``wait_ready``, attaching to the app's own subscription, and
``unsubscribed``. The same flows against the real stack are in test_synced.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from centrifugo_async import Envelope
from centrifugo_async.client import (
    Decision,
    Fetched,
    LoadResult,
    SubscriptionLost,
    SyncedSubscription,
    VersionGate,
)
from tests.client.fakes import FakeClient, FakeSubscription, Handler, State

CHANNEL = "obj:flow"


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Let the helper's tasks run until ``condition`` holds (everything is in-process)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def drain() -> None:
    """Let every runnable task run to its next wait."""
    for _ in range(50):
        await asyncio.sleep(0)


class Load:
    """A ``load()`` the test completes: each call waits for ``release(snapshot)``."""

    def __init__(self) -> None:
        self.calls: list[asyncio.Future[LoadResult]] = []
        self.cancelled = 0

    async def __call__(self) -> LoadResult:
        future: asyncio.Future[LoadResult] = asyncio.get_running_loop().create_future()
        self.calls.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def release(self, snapshot: LoadResult, call: int = -1) -> None:
        self.calls[call].set_result(snapshot)


class App:
    """The app's store and a log of every callback, in order."""

    def __init__(self) -> None:
        self.store: dict[str, int] = {}
        self.log: list[str] = []
        self.errors: list[tuple[BaseException, str]] = []

    def on_update(self, envelope: Envelope[Any], decision: Decision) -> None:
        assert envelope.version > self.store.get(envelope.key, -1), "went backwards"
        self.store[envelope.key] = envelope.version
        self.log.append(f"update {envelope.key}@{envelope.version} {decision.reason}")

    def on_delete(self, envelope: Envelope[Any], decision: Decision) -> None:
        self.store.pop(envelope.key, None)
        self.log.append(f"delete {envelope.key}@{envelope.version} {decision.reason}")

    def on_drop(self, envelope: Envelope[Any], decision: Decision) -> None:
        self.log.append(f"drop {envelope.key}@{envelope.version} {decision.reason}")

    def on_resync(self, reason: str) -> None:
        self.log.append(f"resync {reason}")

    def on_ready(self) -> None:
        self.log.append("ready")

    def on_error(self, exc: BaseException, context: str) -> None:
        self.errors.append((exc, context))
        self.log.append(f"error {context}")

    def synced(
        self,
        client: FakeClient,
        channel: str | FakeSubscription,
        load: Callable[[], Awaitable[LoadResult]],
        **options: Any,
    ) -> SyncedSubscription:
        return SyncedSubscription(
            client,  # type: ignore[arg-type]
            channel,  # type: ignore[arg-type]
            load=load,
            on_update=self.on_update,
            on_delete=self.on_delete,
            on_drop=self.on_drop,
            on_resync=self.on_resync,
            on_ready=self.on_ready,
            on_error=self.on_error,
            retry_initial=0.001,
            retry_max=0.002,
            **options,
        )

    def snapshot(self, **versions: int) -> list[tuple[str, int]]:
        self.store = dict(versions)
        return list(versions.items())


async def started(
    app: App, load: Load, snapshot: dict[str, int], **options: Any
) -> tuple[SyncedSubscription, FakeSubscription]:
    """A helper through its initial sync, with ``snapshot`` loaded."""
    client = FakeClient()
    sync = app.synced(client, CHANNEL, load, **options)
    start = asyncio.create_task(sync.start())
    await until(lambda: CHANNEL in client.subscriptions)
    sub = client.subscriptions[CHANNEL]
    await sub.subscribed()
    await until(lambda: len(load.calls) == 1)
    load.release(app.snapshot(**snapshot))
    async with asyncio.timeout(5):
        await start
    return sync, sub


async def test_ready_comes_after_the_buffered_updates_and_state_follows() -> None:
    app, load = App(), Load()
    client = FakeClient()
    sync = app.synced(client, CHANNEL, load)
    assert sync.state == "closed"
    start = asyncio.create_task(sync.start())
    await until(lambda: CHANNEL in client.subscriptions)
    sub = client.subscriptions[CHANNEL]
    assert sub.options == {"recoverable": True, "positioned": True}
    await sub.subscribed()
    await until(lambda: len(load.calls) == 1)
    assert sync.state == "loading"
    await sub.publish("a", 1)
    await sub.publish("a", 3)
    await sub.publish("b", 1)
    load.release(app.snapshot(a=2))
    async with asyncio.timeout(5):
        await start
    assert app.log == ["drop a@1 stale", "update a@3 newer", "update b@1 new", "ready"]
    assert sync.state == "live" and sync.ready
    await sync.wait_ready()  # at once

    sync.request_resync("manual")
    await until(lambda: len(load.calls) == 2)
    assert sync.state == "resyncing" and not sync.ready
    waiting = asyncio.create_task(sync.wait_ready())
    await drain()
    assert not waiting.done()
    load.release(app.snapshot(a=3, b=1))
    async with asyncio.timeout(5):
        await waiting
    assert app.log[-2:] == ["resync manual", "ready"]
    await sync.close()
    assert sync.state == "closed" and CHANNEL not in client.subscriptions


async def test_a_delete_removes_the_key_and_a_late_older_update_stays_dropped() -> None:
    app, load = App(), Load()
    sync, sub = await started(app, load, {"a": 2, "b": 1})
    await sub.publish("a", 3, deleted=True)
    await sub.publish("a", 2)  # a late update from before the delete
    await sub.publish("a", 3)
    await sub.publish("b", 2, deleted=True)
    await sub.publish("b", 3)  # re-created after the delete
    await until(lambda: len(app.log) >= 6)
    assert app.log[1:] == [
        "delete a@3 newer",
        "drop a@2 stale",
        "drop a@3 duplicate",
        "delete b@2 newer",
        "update b@3 newer",
    ]
    assert app.store == {"b": 3}
    assert sync.gate.is_deleted("a") and not sync.gate.is_deleted("b")
    await sync.close()


async def test_a_reload_reconciles_deletes_in_the_snapshot_and_keys_absent_from_it() -> None:
    app, load = App(), Load()
    sync, sub = await started(app, load, {"a": 1, "b": 1, "c": 1})
    sync.request_resync("manual")
    await until(lambda: len(load.calls) == 2)
    # Deleted while the page was away: "a" reported as a tombstone, "b" just absent.
    app.store = {"c": 1}
    load.release([("a", 5, True), ("c", 1)])
    await until(lambda: sync.ready)
    await sub.publish("a", 4)  # late, from before the delete
    await sub.publish("b", 1)  # late redelivery of what the page had
    await sub.publish("b", 2)  # the gate cannot know: b's delete version is unknown
    await until(lambda: len(app.log) >= 6)
    assert app.log[-3:] == ["drop a@4 stale", "drop b@1 duplicate", "update b@2 newer"]
    await sync.close()


async def test_too_many_buffered_publications_resync_instead() -> None:
    app, load = App(), Load()
    client = FakeClient()
    sync = app.synced(client, CHANNEL, load, max_buffered=3)
    start = asyncio.create_task(sync.start())
    await until(lambda: CHANNEL in client.subscriptions)
    sub = client.subscriptions[CHANNEL]
    await sub.subscribed()
    await until(lambda: len(load.calls) == 1)
    for version in range(1, 5):
        await sub.publish("a", version)
    await until(lambda: len(load.calls) == 2)
    assert load.cancelled == 1, "the superseded load was cancelled"
    assert sync.buffered <= 3
    await sub.publish("a", 5)  # during the new load: buffered (a@4 came before: in its snapshot)
    load.release(app.snapshot(a=4), call=1)
    async with asyncio.timeout(5):
        await start
    assert app.log == ["resync buffer-overflow", "update a@5 newer", "ready"]
    assert app.store == {"a": 5}
    await sync.close()


async def test_a_superseded_load_is_cancelled_and_nothing_before_the_next_sync_is_applied() -> None:
    app, load = App(), Load()
    sync, sub = await started(app, load, {"a": 1})
    await sub.subscribed(was_recovering=True, recovered=False)
    await until(lambda: len(load.calls) == 2)
    await sub.publish("a", 2)
    sync.request_resync("manual")
    await until(lambda: len(load.calls) == 3)
    assert load.cancelled == 1
    await sub.publish("a", 3)
    load.release(app.snapshot(a=2))
    await until(lambda: sync.ready)
    assert app.log[1:] == [
        "resync recovery-failed",
        "resync manual",
        "update a@3 newer",
        "ready",
    ]
    await sync.close()


async def test_close_cancels_a_load_in_flight() -> None:
    app, load = App(), Load()
    client = FakeClient()
    sync = app.synced(client, CHANNEL, load)
    start = asyncio.create_task(sync.start())
    await until(lambda: CHANNEL in client.subscriptions)
    await client.subscriptions[CHANNEL].subscribed()
    await until(lambda: len(load.calls) == 1)
    await sync.close()
    assert load.cancelled == 1
    with pytest.raises(SubscriptionLost, match="closed before the first sync"):
        async with asyncio.timeout(5):
            await start


def fetched_from(store: dict[str, int], key: str, version: int | None) -> Fetched:
    def apply() -> None:
        if version is None:
            store.pop(key, None)
        else:
            store[key] = version

    return Fetched(version, apply, deleted=version is None)


async def test_reload_key_never_moves_the_store_backwards() -> None:
    app, load = App(), Load()
    sync, sub = await started(app, load, {"a": 1, "b": 1}, gate=VersionGate(max_keys=1))
    await sub.publish("a", 2)
    await until(lambda: app.log[-1] == "drop a@2 evicted")

    # Two overlapping reloads of "a": the older read lands last and is not applied.
    reads: dict[int, asyncio.Future[int]] = {}

    def fetch_reading(n: int) -> Callable[[str], Awaitable[Fetched]]:
        async def fetch(key: str) -> Fetched:
            reads[n] = asyncio.get_running_loop().create_future()
            return fetched_from(app.store, key, await reads[n])

        return fetch

    first = asyncio.create_task(sync.reload_key("a", fetch_reading(1)))
    second = asyncio.create_task(sync.reload_key("a", fetch_reading(2)))
    await until(lambda: len(reads) == 2)
    await sub.publish("a", 4)  # arrives during the fetches: waits, then meets the gate
    await sub.publish("a", 3)
    reads[2].set_result(3)
    assert await second is True
    reads[1].set_result(2)
    assert await first is False
    await until(lambda: app.store["a"] == 4)
    assert app.store["a"] == 4 and sync.gate.version("a") == 4
    assert app.log[-2:] == ["update a@4 newer", "drop a@3 stale"]
    await sync.close()


async def test_reload_key_from_on_drop_and_for_a_deleted_object() -> None:
    app = App()
    backend: dict[str, int | None] = {"a": 7, "b": None}
    reloads: list[bool] = []

    async def on_drop(envelope: Envelope[Any], decision: Decision) -> None:
        app.on_drop(envelope, decision)
        if decision.reason == "evicted":

            async def fetch(key: str) -> Fetched:
                return fetched_from(app.store, key, backend[key])

            reloads.append(await sync.reload_key(envelope.key, fetch))

    client = FakeClient()
    sync = SyncedSubscription(
        client,  # type: ignore[arg-type]
        CHANNEL,
        load=lambda: asyncio.sleep(0, app.snapshot(a=1, b=1, c=1)),
        on_update=app.on_update,
        on_drop=on_drop,
        on_error=app.on_error,
        gate=VersionGate(max_keys=1),
    )
    start = asyncio.create_task(sync.start())
    await until(lambda: CHANNEL in client.subscriptions)
    sub = client.subscriptions[CHANNEL]
    await sub.subscribed()
    async with asyncio.timeout(5):
        await start
    await sub.publish("a", 7)
    await sub.publish("b", 2)
    await sub.publish("b", 3)
    await until(lambda: len(reloads) == 3)
    assert reloads == [True, True, True]
    assert app.store == {"a": 7, "c": 1}
    assert app.errors == []
    await sync.close()


async def test_a_failing_fetch_is_reported_and_releases_the_waiting_publications() -> None:
    app, load = App(), Load()
    sync, sub = await started(app, load, {"a": 1})

    async def fetch(key: str) -> Fetched:
        await sub.publish("a", 2)  # waits for the reload
        raise ConnectionError("backend down")

    assert await sync.reload_key("a", fetch) is False
    await until(lambda: app.log[-1] == "update a@2 newer")
    assert [context for _, context in app.errors] == ["reload_key"]
    await sync.close()


async def test_a_reload_result_during_a_full_resync_is_judged_after_it() -> None:
    app, load = App(), Load()
    sync, _ = await started(app, load, {"a": 1})
    sync.request_resync("manual")
    await until(lambda: len(load.calls) == 2)

    async def fetch(key: str) -> Fetched:
        return fetched_from(app.store, key, 2)  # read before the snapshot below

    reload = asyncio.create_task(sync.reload_key("a", fetch))
    await drain()
    load.release(app.snapshot(a=3))
    assert await reload is False, "older than the snapshot: not applied"
    assert app.store == {"a": 3}
    await sync.close()


async def test_attaching_to_the_apps_own_subscription() -> None:
    seen: list[str] = []

    class AppHandler(Handler):
        async def on_publication(self, ctx: Any) -> None:
            seen.append(ctx.pub.data["key"])

        async def on_join(self, ctx: Any) -> None:
            seen.append("join")

    app, load = App(), Load()
    client = FakeClient()
    own = client.new_subscription(CHANNEL, AppHandler(), token="jwt", delta="fossil")
    handler = own.events
    own.state = State.SUBSCRIBED
    sync = app.synced(client, own, load)
    assert sync.channel == CHANNEL
    start = asyncio.create_task(sync.start())
    await until(lambda: len(load.calls) == 1)  # already subscribed: loads at once
    assert own.subscribe_calls == 0
    load.release(app.snapshot())
    async with asyncio.timeout(5):
        await start
    await own.publish("a", 1)
    await own.events.on_join(object())
    await until(lambda: app.store == {"a": 1})
    assert seen == ["a", "join"]
    await sync.close()
    assert own.events is handler and own.unsubscribe_calls == 0
    assert client.subscriptions == {CHANNEL: own}


async def test_an_unsubscribed_attached_subscription_is_subscribed_by_start() -> None:
    app, load = App(), Load()
    client = FakeClient()
    own = client.new_subscription(CHANNEL, token="jwt")
    sync = app.synced(client, own, load)
    start = asyncio.create_task(sync.start())
    await until(lambda: own.subscribe_calls == 1)
    await own.subscribed()
    await until(lambda: len(load.calls) == 1)
    load.release([])
    async with asyncio.timeout(5):
        await start
    await sync.close()


async def test_unsubscribed_by_the_server_or_by_the_app() -> None:
    app, load = App(), Load()
    sync, sub = await started(app, load, {})
    await sub.ended(2500, "unauthorized")
    assert sync.state == "unsubscribed"
    with pytest.raises(SubscriptionLost, match="unauthorized"):
        await sync.wait_ready()
    await until(lambda: len(app.errors) == 1)
    assert app.errors[0][1] == "unsubscribed"

    await sub.subscribed()  # subscribed again: what was missed is unknown
    await until(lambda: len(load.calls) == 2)
    load.release([])
    await sync.wait_ready()
    assert app.log[-2:] == ["resync resubscribed", "ready"]

    await sub.ended(0, "unsubscribe called")
    await drain()
    assert sync.state == "unsubscribed" and len(app.errors) == 1, "the app's own: no error"
    await sync.close()


async def test_a_reload_of_an_evicted_key_read_before_a_snapshot_is_not_applied() -> None:
    """The gate cannot compare (the key is evicted again): only a fresh read is trusted."""
    app, load = App(), Load()
    sync, _ = await started(app, load, {"a": 1, "b": 1}, gate=VersionGate(max_keys=1))
    read: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def fetch(key: str) -> Fetched:
        return fetched_from(app.store, key, await read)

    reload = asyncio.create_task(sync.reload_key("a", fetch))
    sync.request_resync("manual")
    await until(lambda: len(load.calls) == 2)
    read.set_result(2)  # read before the snapshot below
    await drain()
    load.release(app.snapshot(a=3, b=1))  # adopting it evicts "a" again (max_keys=1)
    assert await reload is False
    assert app.store["a"] == 3
    await sync.close()


async def test_an_absent_result_read_before_a_newer_one_landed_is_not_applied() -> None:
    app, load = App(), Load()
    sync, _ = await started(app, load, {"a": 1})
    reads: list[asyncio.Future[int | None]] = []

    async def fetch(key: str) -> Fetched:
        read: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        reads.append(read)
        return fetched_from(app.store, key, await read)

    first = asyncio.create_task(sync.reload_key("a", fetch))
    second = asyncio.create_task(sync.reload_key("a", fetch))
    await until(lambda: len(reads) == 2)
    reads[1].set_result(10)  # re-created: read last, lands first
    assert await second is True
    reads[0].set_result(None)  # "absent", read while it was deleted: older, version unknown
    assert await first is False
    assert app.store == {"a": 10}
    await sync.close()


async def test_publications_before_the_last_of_several_sync_requests_are_left_to_it() -> None:
    app, load = App(), Load()
    release = asyncio.Event()
    sync, sub = await started(app, load, {})

    async def slow_update(envelope: Envelope[Any], decision: Decision) -> None:
        app.on_update(envelope, decision)
        await release.wait()

    sync._on_update = slow_update
    await sub.publish("a", 1)  # the worker is busy with it
    await until(lambda: app.log[-1] == "update a@1 new")
    sync.request_resync("first")
    await sub.publish("a", 2)  # covered by the last sync's snapshot
    sync.request_resync("second")
    release.set()
    await until(lambda: len(load.calls) == 2)
    load.release(app.snapshot(a=2))
    await until(lambda: sync.ready)
    assert app.log[1:] == ["update a@1 new", "resync second", "ready"]
    await sync.close()


async def test_publications_queued_before_a_retried_load_are_left_to_its_snapshot() -> None:
    app = App()
    calls = 0
    gate = asyncio.Event()

    async def load() -> LoadResult:
        nonlocal calls
        calls += 1
        await gate.wait()
        if calls == 1:
            raise ConnectionError("database away")
        return app.snapshot()  # read after the delete of "a": it is gone

    client = FakeClient()
    sync = app.synced(client, CHANNEL, load)
    start = asyncio.create_task(sync.start())
    await until(lambda: CHANNEL in client.subscriptions)
    sub = client.subscriptions[CHANNEL]
    await sub.subscribed()
    await until(lambda: calls == 1)
    await sub.publish("a", 1)  # queued before the retry is called: its snapshot covers it
    gate.set()
    async with asyncio.timeout(5):
        await start
    assert calls == 2 and app.store == {}, "a deleted object does not come back"
    assert app.log == ["error load", "ready"]
    await sync.close()


async def test_subscribed_again_with_recovery_is_live_again_without_a_reload() -> None:
    app, load = App(), Load()
    sync, sub = await started(app, load, {"a": 1})
    await sub.ended(2500, "unauthorized")
    assert sync.state == "unsubscribed" and not sync.ready
    await sub.subscribed(was_recovering=True, recovered=True)
    assert sync.state == "live" and len(load.calls) == 1
    await sync.wait_ready()
    await sync.close()
