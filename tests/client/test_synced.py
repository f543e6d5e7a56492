"""SyncedSubscription against the real stack: publisher -> Redis -> relay -> Centrifugo."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from centrifuge import Client, SubscribedContext, Subscription  # type: ignore[import-untyped]

from centrifugo_async import AsyncPublisher, Envelope
from centrifugo_async.client import (
    Decision,
    GateStats,
    LoadResult,
    SubscriptionLost,
    SyncedSubscription,
    UpdateCallback,
)
from centrifugo_async.relay import RelaySettings
from centrifugo_async.relay.settings import Freshness, FreshnessRule
from devstack import DEV_API_KEY, CentrifugoServer
from devstack.services import DEV_HMAC_SECRET

pytestmark = pytest.mark.integration

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "envelopes.json").read_text(encoding="utf-8")
)


class App:
    """What an app keeps: its objects' versions, plus a log of what the helper told it."""

    def __init__(self) -> None:
        self.state: dict[str, int] = {}
        self.updates: list[tuple[str, int, str]] = []
        self.drops: list[tuple[str, int, str]] = []
        self.resyncs: list[str] = []
        self.readies = 0
        self.errors: list[tuple[BaseException, str]] = []

    def on_update(self, envelope: Envelope[Any], decision: Decision) -> None:
        assert envelope.version > self.state.get(envelope.key, -1), "gate let an old one in"
        self.state[envelope.key] = envelope.version
        self.updates.append((envelope.key, envelope.version, decision.reason))

    async def on_drop(self, envelope: Envelope[Any], decision: Decision) -> None:
        self.drops.append((envelope.key, envelope.version, decision.reason))

    def on_resync(self, reason: str) -> None:
        self.resyncs.append(reason)

    def on_ready(self) -> None:
        self.readies += 1

    def on_error(self, exc: BaseException, context: str) -> None:
        self.errors.append((exc, context))

    def synced(
        self,
        client: Client,
        channel: str | Subscription,
        load: Callable[[], Awaitable[LoadResult]],
        on_update: UpdateCallback | None = None,
        retry_initial: float = 0.5,
    ) -> SyncedSubscription:
        return SyncedSubscription(
            client,
            channel,
            load=load,
            on_update=on_update or self.on_update,
            on_drop=self.on_drop,
            on_resync=self.on_resync,
            on_ready=self.on_ready,
            on_error=self.on_error,
            retry_initial=retry_initial,
            retry_max=retry_initial * 2,
        )

    def seen(self) -> int:
        return len(self.updates) + len(self.drops)


async def until(condition: Callable[[], bool], within: float = 15.0) -> None:
    """Poll ``condition`` (state of other components, which signal nothing) for ``within`` s."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def client(centrifugo: CentrifugoServer) -> AsyncIterator[Client]:
    centrifugo.start()
    client = Client(centrifugo.ws_url)
    async with asyncio.timeout(10):
        await client.connect()
    yield client
    async with asyncio.timeout(10):
        await client.disconnect()


@pytest.fixture
def relay_settings(relay_settings: RelaySettings) -> RelaySettings:
    """A relay that sends every version (freshness ``all``): these tests publish stale
    and repeated versions on purpose, for the helper's gate to drop."""
    return attrs.evolve(relay_settings, freshness=(FreshnessRule("*", Freshness.ALL),))


@pytest.fixture
async def publisher(running_relay: RelaySettings) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher.from_url(running_relay.redis_url, shards=4) as pub:
        yield pub


def fresh_channel() -> str:
    return f"obj:sync-{uuid.uuid4().hex[:12]}"


async def test_initial_sync_buffers_replays_and_drops(
    client: Client, publisher: AsyncPublisher
) -> None:
    channel = fresh_channel()
    app = App()
    loading = asyncio.Event()
    release = asyncio.Event()

    async def load() -> list[tuple[str, int]]:
        loading.set()
        await release.wait()
        snapshot = {"a": 2, "b": 5}
        app.state.update(snapshot)
        return list(snapshot.items())

    sync = app.synced(client, channel, load)
    start = asyncio.create_task(sync.start())
    try:
        async with asyncio.timeout(10):
            await loading.wait()
        # Published while load() runs: these must wait and then meet the seeded gate.
        await publisher.publish(channel, {}, key="a", version=1)  # older than the snapshot
        await publisher.publish(channel, {}, key="a", version=3)
        await publisher.publish(channel, {}, key="b", version=5)  # already in the snapshot
        await publisher.publish(channel, {}, key="c", version=1)
        await until(lambda: sync.buffered == 4)
        assert app.seen() == 0 and not sync.ready
        release.set()
        async with asyncio.timeout(10):
            await start
        assert sync.ready and app.readies == 1

        # Live: an injected duplicate delivery, an older version, then newer ones.
        await publisher.publish(channel, {}, key="a", version=3, idempotency_key="dup-a3")
        await publisher.publish(channel, {}, key="a", version=2)
        await publisher.publish(channel, {}, key="a", version=4)
        await publisher.publish(channel, {}, key="c", version=2)
        await publisher.publish(channel, {}, key="b", version=6)
        await until(lambda: app.seen() == 9)
        await asyncio.sleep(0.3)  # nothing else may arrive
    finally:
        async with asyncio.timeout(10):
            await sync.close()

    assert app.errors == []
    assert app.resyncs == []
    assert app.seen() == 9
    assert app.state == {"a": 4, "b": 6, "c": 2}
    assert sorted(app.drops) == [
        ("a", 1, "stale"),
        ("a", 2, "stale"),
        ("a", 3, "duplicate"),
        ("b", 5, "duplicate"),
    ]
    assert sorted(app.updates) == [
        ("a", 3, "newer"),
        ("a", 4, "newer"),
        ("b", 6, "newer"),
        ("c", 1, "new"),
        ("c", 2, "newer"),
    ]
    assert sync.gate.stats() == GateStats(size=3, accepted=5, stale=2, duplicate=2, evicted=0)
    assert sync.subscription is None
    assert client.get_subscription(channel) is None  # detached: the channel is free again


async def test_failed_recovery_reloads_with_backoff_and_replays(
    client: Client, publisher: AsyncPublisher
) -> None:
    channel = fresh_channel()
    app = App()
    snapshots = [{"a": 1, "b": 1, "gone": 1}, {"a": 10, "b": 2}]
    calls = 0
    loading = asyncio.Event()
    release = asyncio.Event()
    release.set()

    async def load() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("database away")
        loading.set()
        await release.wait()
        snapshot = snapshots[min(calls - 1, 1)]
        app.state = dict(snapshot)
        return snapshot

    sync = app.synced(client, channel, load, retry_initial=0.05)
    try:
        async with asyncio.timeout(10):
            await sync.start()
        await publisher.publish(channel, {}, key="b", version=2)
        await until(lambda: app.seen() == 1)

        loading.clear()
        release.clear()
        events = sync.events
        assert events is not None
        await events.on_subscribed(
            SubscribedContext(
                channel=channel,
                recoverable=True,
                positioned=True,
                stream_position=None,
                was_recovering=True,
                recovered=False,
                data=None,
            )
        )
        async with asyncio.timeout(10):
            await loading.wait()  # the retry, after the failed reload and the backoff
        assert not sync.ready and app.resyncs == ["recovery-failed"]
        # Arrives during the reload: buffered, then checked against the new snapshot.
        await publisher.publish(channel, {}, key="a", version=11)
        await until(lambda: sync.buffered == 1)
        release.set()
        await until(lambda: sync.ready)
        await publisher.publish(channel, {}, key="a", version=10, idempotency_key="dup-a10")
        await publisher.publish(channel, {}, key="b", version=1, idempotency_key="again-b1")
        await until(lambda: app.seen() == 4)
    finally:
        async with asyncio.timeout(10):
            await sync.close()

    assert calls == 3  # initial, failed reload, reload after the backoff
    assert [context for _, context in app.errors] == ["load"]
    assert isinstance(app.errors[0][0], ConnectionError)
    assert app.readies == 2
    assert sorted(app.updates) == [("a", 11, "newer"), ("b", 2, "newer")]
    assert sorted(app.drops) == [("a", 10, "stale"), ("b", 1, "stale")]
    assert app.state == {"a": 11, "b": 2}
    # Absent from the fresh snapshot: gone, remembered as a tombstone at its known version.
    assert sync.gate.is_deleted("gone") and sync.gate.version("gone") == 1


async def test_malformed_publications_and_failing_callbacks_are_reported(
    client: Client, centrifugo: CentrifugoServer
) -> None:
    """Published straight through the server API: what no publisher of ours would send."""
    channel = fresh_channel()
    app = App()

    def on_update(envelope: Envelope[Any], decision: Decision) -> None:
        app.on_update(envelope, decision)
        if envelope.key == "boom" and envelope.version == 1:
            raise RuntimeError("app bug")

    async def load() -> list[tuple[str, int]]:
        return []

    sync = app.synced(client, channel, load, on_update=on_update)
    invalid = []
    for case in VECTORS["invalid"]:
        if case["reason"] != "invalid_envelope":
            continue  # the JSON profile: tested on bytes in test_data.py, most cannot be sent here
        try:
            invalid.append(json.loads(case["encoded"]))
        except json.JSONDecodeError:
            continue  # not JSON: the server API cannot carry it as data
    valid = [json.loads(case["encoded"]) for case in VECTORS["valid"]]
    boom = {
        "v": 1,
        "channel": channel,
        "key": "boom",
        "version": 1,
        "seq": 1,
        "shard": 0,
        "ts": 1,
        "data": {},
    }
    after = {**boom, "version": 2, "seq": 2}
    try:
        async with asyncio.timeout(10):
            await sync.start()
        async with httpx.AsyncClient(timeout=5) as http:
            for data in [*invalid, boom, *valid, after]:
                reply = await http.post(
                    f"{centrifugo.api_url}/publish",
                    headers={"X-API-Key": DEV_API_KEY},
                    json={"channel": channel, "data": data},
                )
                assert reply.json().get("error") is None, reply.text
        await until(lambda: app.seen() == len(valid) + 2)
        await asyncio.sleep(0.2)
        assert sync.ready and sync.subscription is not None
    finally:
        async with asyncio.timeout(10):
            await sync.close()

    contexts = [context for _, context in app.errors]
    assert contexts == ["publication"] * len(invalid) + ["on_update"]
    assert all("not a valid envelope" in str(exc) for exc, _ in app.errors[:-1])
    assert str(app.errors[-1][0]) == "app bug"
    assert app.state["boom"] == 2  # the next update still came through
    assert app.seen() == len(valid) + 2


async def test_a_restarted_server_without_history_triggers_a_resync(
    client: Client, publisher: AsyncPublisher, centrifugo: CentrifugoServer
) -> None:
    """The real failure: Centrifugo restarts with an empty (memory) history."""
    channel = fresh_channel()
    app = App()
    versions = iter([{"a": 1}, {"a": 5}])

    async def load() -> dict[str, int]:
        snapshot = next(versions)
        app.state = dict(snapshot)
        return snapshot

    sync = app.synced(client, channel, load, retry_initial=0.05)
    try:
        async with asyncio.timeout(10):
            await sync.start()
        await publisher.publish(channel, {}, key="a", version=2)
        await until(lambda: app.seen() == 1)
        await asyncio.to_thread(centrifugo.restart)
        await until(lambda: app.readies == 2, within=30)
        await publisher.publish(channel, {}, key="a", version=6)
        await until(lambda: app.seen() == 2)
    finally:
        async with asyncio.timeout(10):
            await sync.close()

    assert app.resyncs == ["recovery-failed"]
    assert app.updates == [("a", 2, "newer"), ("a", 6, "newer")]
    assert app.state == {"a": 6}


async def test_start_fails_when_the_server_refuses_the_subscription(client: Client) -> None:
    async def load() -> list[tuple[str, int]]:
        raise AssertionError("never called: there is no subscription")

    sync = SyncedSubscription(client, "unknown-namespace:x", load=load)
    with pytest.raises(SubscriptionLost):
        async with asyncio.timeout(10):
            await sync.start()
    assert sync.subscription is None
    assert client.get_subscription("unknown-namespace:x") is None


async def test_close_from_a_callback_and_start_again(
    client: Client, publisher: AsyncPublisher
) -> None:
    channel = fresh_channel()
    app = App()

    async def load() -> list[tuple[str, int]]:
        return []

    async def close_on_update(envelope: Envelope[Any], decision: Decision) -> None:
        app.on_update(envelope, decision)
        await sync.close()

    sync = app.synced(client, channel, load, on_update=close_on_update)
    async with asyncio.timeout(10):
        await sync.start()
    await publisher.publish(channel, {}, key="a", version=1)
    await until(lambda: sync.subscription is None)
    assert app.updates == [("a", 1, "new")] and not sync.ready

    async with asyncio.timeout(10):
        await sync.start()  # a closed helper starts afresh, keeping its gate
    try:
        await publisher.publish(channel, {}, key="a", version=1, idempotency_key="replay-a1")
        await publisher.publish(channel, {}, key="a", version=2)
        await until(lambda: app.seen() == 3)
    finally:
        async with asyncio.timeout(10):
            await sync.close()
    assert app.errors == []
    assert app.drops == [("a", 1, "duplicate")]
    assert app.updates == [("a", 1, "new"), ("a", 2, "newer")]


async def test_request_resync_reloads_after_what_is_queued(client: Client) -> None:
    app = App()
    loads = 0

    async def load() -> list[tuple[str, int]]:
        nonlocal loads
        loads += 1
        return [("a", loads)]

    sync = app.synced(client, fresh_channel(), load)
    try:
        async with asyncio.timeout(10):
            await sync.start()
        sync.request_resync()
        await until(lambda: app.readies == 2)
    finally:
        async with asyncio.timeout(10):
            await sync.close()
    assert app.resyncs == ["manual"] and loads == 2
    assert sync.gate.version("a") == 2


def subscription_token(channel: str, secret: str = DEV_HMAC_SECRET) -> str:
    """An HS256 subscription JWT for ``channel`` (what an app's backend would issue)."""

    def part(value: object) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"sub": "", "channel": channel, "exp": int(time.time()) + 600}
    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


async def test_a_delete_travels_end_to_end_and_a_late_older_update_stays_dropped(
    client: Client, publisher: AsyncPublisher
) -> None:
    channel = fresh_channel()
    app = App()
    deletes: list[tuple[str, int, bool]] = []

    async def load() -> list[tuple[str, int]]:
        app.state = {"a": 1, "b": 1}
        return list(app.state.items())

    def on_delete(envelope: Envelope[Any], decision: Decision) -> None:
        app.state.pop(envelope.key, None)
        deletes.append((envelope.key, envelope.version, envelope.data is None))

    sync = SyncedSubscription(
        client,
        channel,
        load=load,
        on_update=app.on_update,
        on_delete=on_delete,
        on_drop=app.on_drop,
        on_error=app.on_error,
    )
    try:
        async with asyncio.timeout(10):
            await sync.start()
        await publisher.publish(channel, {}, key="a", version=1)  # already loaded
        await publisher.delete(channel, key="a", version=2)
        # Late: the version before the delete, with a fresh idempotency key so that
        # Centrifugo does not swallow it as a repeat.
        await publisher.publish(channel, {"late": True}, key="a", version=1, idempotency_key="late")
        await publisher.delete(channel, key="b", version=2)
        await publisher.publish(channel, {}, key="b", version=3)  # re-created
        await until(lambda: len(app.updates) + len(app.drops) + len(deletes) == 5)
    finally:
        async with asyncio.timeout(10):
            await sync.close()
    # a and b may sit on different shards: only the order per key is guaranteed.
    assert sorted(deletes) == [("a", 2, True), ("b", 2, True)]
    assert app.drops == [("a", 1, "duplicate"), ("a", 1, "stale")]
    assert app.updates == [("b", 3, "newer")]
    assert app.state == {"b": 3}
    assert sync.gate.is_deleted("a") and sync.gate.version("a") == 2
    assert app.errors == []


async def test_the_apps_own_subscription_with_a_token(
    client: Client, publisher: AsyncPublisher
) -> None:
    channel = fresh_channel()
    app = App()

    async def load() -> list[tuple[str, int]]:
        return []

    own = client.new_subscription(
        channel, token=subscription_token(channel), recoverable=True, positioned=True
    )
    sync = app.synced(client, own, load)
    try:
        async with asyncio.timeout(10):
            await sync.start()
        assert sync.state == "live" and own.events is sync.events
        await publisher.publish(channel, {}, key="a", version=1)
        await until(lambda: app.updates == [("a", 1, "new")])
    finally:
        async with asyncio.timeout(10):
            await sync.close()
    assert client.get_subscription(channel) is own, "the app's subscription stays the app's"
    assert own.state.value == "subscribed"
    await own.unsubscribe()
    client.remove_subscription(own)

    refused = client.new_subscription(channel, token=subscription_token(channel, "wrong"))
    sync = app.synced(client, refused, load)
    with pytest.raises(SubscriptionLost):
        async with asyncio.timeout(10):
            await sync.start()  # the token is the one that was sent: refused
    client.remove_subscription(refused)
