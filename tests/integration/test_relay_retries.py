"""The relay's retry, isolation and ordering logic, with a scripted Centrifugo.

Redis is real; Centrifugo is the scripted fake (``tests/support/fake_centrifugo``)
on loopback, so each failure class can be produced on demand and every request
the relay sends is recorded, while the relay runs its production HTTP path: the
lean HTTP/1.1 client that ``serve()`` picks for an ``http://`` URL.

The relay here sends every version (freshness ``all``): most tests publish many
versions of one key and check that each one arrives, in the order the retry
rules give. With monotonic delivery (the default) a resent batch leaves out
what a newer version of its key supersedes: tests/integration/test_freshness.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import attrs
import pytest
import redis

from centrifugo_async import CentrifugoAuthError, Keyspace, Message, Publisher
from centrifugo_async.admin import iter_dead_letters
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay.metrics import RelayMetrics
from centrifugo_async.relay.settings import Freshness, FreshnessRule
from tests.support.fake_centrifugo import (
    Accept,
    Behaviour,
    CloseMidBody,
    Decide,
    Drop,
    FakeCentrifugo,
    GarbageStatusLine,
    Hang,
    LongBody,
    Raw,
    ReplyErrors,
    Request,
    Status,
)
from tests.support.stack import wait_until_drained

SHARDS = 2


async def relay_through(
    settings: RelaySettings,
    server: FakeCentrifugo,
    expected: int,
    within: float = 20,
    metrics: RelayMetrics | None = None,
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, metrics=metrics))
    try:
        await wait_until_drained(settings.redis_url, SHARDS, within=within)
        async with asyncio.timeout(within):
            while True:
                if len(server.accepted) >= expected or task.done():
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


@pytest.fixture
async def fake() -> AsyncIterator[FakeCentrifugo]:
    async with FakeCentrifugo() as server:
        yield server


@pytest.fixture
def settings(redis_url: str, fake: FakeCentrifugo) -> RelaySettings:
    return RelaySettings(
        metrics_port=0,
        redis_url=redis_url,
        api_url=fake.url,
        api_key=fake.api_key or "",
        lease_ttl=3.0,
        idle_wait=0.1,
        retry_initial=0.01,
        retry_max=0.05,
        freshness=(FreshnessRule("*", Freshness.ALL),),
    )


def publish(redis_url: str, count: int, key: str = "doc", channel: str = "obj:1") -> None:
    with Publisher.from_url(redis_url, shards=SHARDS) as publisher:
        publisher.publish_many([Message(channel, {"n": v}, key, v) for v in range(1, count + 1)])


def versions(server: FakeCentrifugo) -> list[int]:
    return [int(p["data"]["version"]) for p in server.accepted]


def reply_error(code: int, at: int) -> Behaviour:
    return ReplyErrors({at: code})


async def test_server_and_network_errors_are_retried_without_loss_or_reordering(
    settings: RelaySettings, fake: FakeCentrifugo
) -> None:
    publish(settings.redis_url, 300)
    fake.script(Status(503), Drop(), Status(502), Status(500))
    await relay_through(settings, fake, expected=300)
    assert versions(fake) == list(range(1, 301))
    assert len(fake.batches) >= 5


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_an_over_long_reply_is_retried_not_read_to_its_end(
    settings: RelaySettings, fake: FakeCentrifugo, framing: str
) -> None:
    publish(settings.redis_url, 20)
    fake.script(LongBody(4 * 1024 * 1024, framing))
    await relay_through(settings, fake, expected=20)
    assert versions(fake) == list(range(1, 21))
    assert len(fake.batches) == 2


async def test_code_100_is_retried_and_other_codes_are_dead_lettered(
    settings: RelaySettings, fake: FakeCentrifugo
) -> None:
    publish(settings.redis_url, 5)
    fake.script(reply_error(100, at=0), reply_error(100, at=0))
    await relay_through(settings, fake, expected=5)
    # The documented order after a code 100 (relay/window.py): Centrifugo went
    # on with 2..5 while 1 failed, and 1 is resent (twice here) after them.
    assert versions(fake) == [2, 3, 4, 5, 1]
    assert [[p["data"]["version"] for p in r.publications] for r in fake.batches] == [
        [1, 2, 3, 4, 5],
        [1],
        [1],
    ]

    redis.Redis.from_url(settings.redis_url).flushall()
    publish(settings.redis_url, 3)
    async with FakeCentrifugo() as second:
        second.script(reply_error(107, at=1))
        await relay_through(attrs.evolve(settings, api_url=second.url), second, expected=2)
    assert versions(second) == [1, 3]
    client = redis.Redis.from_url(settings.redis_url)
    (entry,) = iter_dead_letters(client, Keyspace(shards=SHARDS))
    assert entry.letter is not None
    assert (entry.letter.reason, entry.letter.code) == ("rejected", 107)
    assert b'"version":2' in entry.letter.original


async def test_a_refused_body_is_isolated_to_the_one_bad_command(
    settings: RelaySettings, fake: FakeCentrifugo
) -> None:
    publish(settings.redis_url, 10)

    def refuse_version_4(request: Request) -> Behaviour:
        if any(p["data"]["version"] == 4 for p in request.publications):
            return Status(400, b"Bad Request")
        return Accept()

    fake.default = Decide(refuse_version_4)
    await relay_through(settings, fake, expected=9)
    assert versions(fake) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    client = redis.Redis.from_url(settings.redis_url)
    (entry,) = iter_dead_letters(client, Keyspace(shards=SHARDS))
    assert entry.letter is not None and entry.letter.reason == "refused"
    assert entry.letter.code is None and "HTTP 400" in entry.letter.error


async def test_batches_grow_with_the_backlog(settings: RelaySettings, fake: FakeCentrifugo) -> None:
    publish(settings.redis_url, 1200)
    await relay_through(attrs.evolve(settings, max_batch=500), fake, expected=1200)
    sizes = [len(request.commands) for request in fake.batches]
    assert sizes[:3] == [500, 500, 200]
    assert versions(fake) == list(range(1, 1201))


async def test_auth_error_mid_stream_is_fatal_and_keeps_the_batch(
    settings: RelaySettings, fake: FakeCentrifugo
) -> None:
    publish(settings.redis_url, 3)
    fake.script(Status(401))
    stop = asyncio.Event()
    with pytest.raises(CentrifugoAuthError):
        await asyncio.wait_for(serve(settings, stop=stop), 20)
    client = redis.Redis.from_url(settings.redis_url)
    shard = Keyspace(shards=SHARDS).all_shards()
    assert sum(client.llen(k.inflight) + client.llen(k.queue) for k in shard) == 3
    assert not list(iter_dead_letters(client, Keyspace(shards=SHARDS)))


async def test_leftovers_in_flight_are_delivered_first(
    settings: RelaySettings, fake: FakeCentrifugo
) -> None:
    """A relay that died mid-batch left messages in flight: they go out before the queue."""
    publish(settings.redis_url, 6)
    client = redis.Redis.from_url(settings.redis_url)
    (keys,) = [k for k in Keyspace(shards=SHARDS).all_shards() if client.llen(k.queue)]
    for _ in range(3):  # what the dead relay had claimed
        client.lmove(keys.queue, keys.inflight, "LEFT", "RIGHT")
    await relay_through(settings, fake, expected=6)
    assert versions(fake) == [1, 2, 3, 4, 5, 6]
    assert len(fake.batches) == 2  # the in-flight batch, then the queue


async def test_every_kind_of_failure_is_retried_and_counted_by_its_cause(
    settings: RelaySettings, fake: FakeCentrifugo
) -> None:
    """Broken HTTP, hangs and error replies: nothing lost or reordered, each cause labelled."""
    publish(settings.redis_url, 40)
    fake.script(
        Hang(),
        CloseMidBody(),
        GarbageStatusLine(),
        Drop(),
        Status(503),
        Status(429),
        Status(408),
        Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json"),
        ReplyErrors({0: 100}),
    )
    metrics = RelayMetrics()
    await relay_through(
        attrs.evolve(settings, request_timeout=0.3),
        fake,
        expected=40,
        metrics=metrics,
    )
    assert fake.unused == ()
    # Version 1 got code 100 while 2..40 were accepted: it goes out again, last.
    assert versions(fake) == [*range(2, 41), 1]
    retried = {
        sample.labels["error_class"]: sample.value
        for metric in metrics.retried.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert retried == {
        "timeout": 1,
        "network": 3,
        "http_5xx": 1,
        "http_429": 1,
        "http_other": 1,
        "bad_reply": 1,
        "code_100": 1,
    }
