"""The relay's retry, isolation and ordering logic, with a scripted Centrifugo.

Redis is real; Centrifugo is an ``httpx.MockTransport`` so that each failure
class can be produced on demand and every request the relay sends is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import attrs
import httpx
import pytest
import redis

from centrifugo_async import CentrifugoAuthError, Keyspace, Message, Publisher
from centrifugo_async.admin import iter_dead_letters
from centrifugo_async.relay import RelaySettings, serve
from tests.support.stack import wait_until_drained

SHARDS = 2
Responder = Callable[[list[dict[str, object]]], httpx.Response]


def ok(commands: list[dict[str, object]]) -> httpx.Response:
    return httpx.Response(200, json={"replies": [{"publish": {}} for _ in commands]})


class ScriptedCentrifugo:
    """Answers batches with the next responder, then with success; records deliveries."""

    def __init__(self, *responders: Responder) -> None:
        self.responders = list(responders)
        self.delivered: list[dict[str, object]] = []
        self.requests = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        commands = [c["publish"] for c in json.loads(request.content)["commands"]]
        if not commands:
            return ok(commands)  # start-up probe
        self.requests += 1
        responder = self.responders.pop(0) if self.responders else ok
        response = responder(commands)
        if response.status_code == 200:
            for command, reply in zip(commands, response.json()["replies"], strict=True):
                if "error" not in reply:
                    self.delivered.append(command["data"])  # type: ignore[arg-type]
        return response


async def relay_through(
    settings: RelaySettings, server: ScriptedCentrifugo, expected: int, within: float = 20
) -> None:
    stop = asyncio.Event()
    transport = httpx.MockTransport(server.handle)
    task = asyncio.create_task(serve(settings, stop=stop, transport=transport))
    try:
        await wait_until_drained(settings.redis_url, SHARDS, within=within)
        async with asyncio.timeout(within):
            while True:
                if len(server.delivered) >= expected or task.done():
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


@pytest.fixture
def settings(redis_url: str) -> RelaySettings:
    return RelaySettings(
        metrics_port=0,
        redis_url=redis_url,
        api_url="http://centrifugo.test/api",
        api_key="k",
        lease_ttl=3.0,
        idle_wait=0.1,
        retry_initial=0.01,
        retry_max=0.05,
    )


def publish(redis_url: str, count: int, key: str = "doc", channel: str = "obj:1") -> None:
    with Publisher.from_url(redis_url, shards=SHARDS) as publisher:
        publisher.publish_many([Message(channel, {"n": v}, key, v) for v in range(1, count + 1)])


def versions(server: ScriptedCentrifugo) -> list[int]:
    return [int(d["version"]) for d in server.delivered]  # type: ignore[call-overload]


def status(code: int) -> Responder:
    return lambda commands: httpx.Response(code, text="unavailable")


def reply_error(code: int, at: int) -> Responder:
    def respond(commands: list[dict[str, object]]) -> httpx.Response:
        replies: list[dict[str, object]] = [{"publish": {}} for _ in commands]
        replies[at] = {"error": {"code": code, "message": f"error {code}"}}
        return httpx.Response(200, json={"replies": replies})

    return respond


def network_error(commands: list[dict[str, object]]) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


async def test_server_and_network_errors_are_retried_without_loss_or_reordering(
    settings: RelaySettings,
) -> None:
    publish(settings.redis_url, 300)
    server = ScriptedCentrifugo(status(503), network_error, status(502), status(500))
    await relay_through(settings, server, expected=300)
    assert versions(server) == list(range(1, 301))
    assert server.requests >= 5


async def test_code_100_is_retried_and_other_codes_are_dead_lettered(
    settings: RelaySettings,
) -> None:
    publish(settings.redis_url, 5)
    server = ScriptedCentrifugo(reply_error(100, at=0), reply_error(100, at=0))
    await relay_through(settings, server, expected=5)
    assert sorted(versions(server)) == [1, 2, 3, 4, 5]

    redis.Redis.from_url(settings.redis_url).flushall()
    publish(settings.redis_url, 3)
    server = ScriptedCentrifugo(reply_error(107, at=1))
    await relay_through(settings, server, expected=2)
    assert versions(server) == [1, 3]
    client = redis.Redis.from_url(settings.redis_url)
    (entry,) = iter_dead_letters(client, Keyspace(shards=SHARDS))
    assert entry.letter is not None
    assert (entry.letter.reason, entry.letter.code) == ("rejected", 107)
    assert b'"version":2' in entry.letter.original


async def test_a_refused_body_is_isolated_to_the_one_bad_command(settings: RelaySettings) -> None:
    publish(settings.redis_url, 10)

    def refuse_version_4(commands: list[dict[str, object]]) -> httpx.Response:
        if any(c["data"]["version"] == 4 for c in commands):  # type: ignore[index]
            return httpx.Response(400, text="Bad Request")
        return ok(commands)

    server = ScriptedCentrifugo(*[refuse_version_4] * 20)
    await relay_through(settings, server, expected=9)
    assert versions(server) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    client = redis.Redis.from_url(settings.redis_url)
    (entry,) = iter_dead_letters(client, Keyspace(shards=SHARDS))
    assert entry.letter is not None and entry.letter.reason == "refused"
    assert entry.letter.code is None and "HTTP 400" in entry.letter.error


async def test_batches_grow_with_the_backlog(settings: RelaySettings) -> None:
    publish(settings.redis_url, 1200)
    sizes: list[int] = []

    def record(commands: list[dict[str, object]]) -> httpx.Response:
        sizes.append(len(commands))
        return ok(commands)

    server = ScriptedCentrifugo(*[record] * 100)
    await relay_through(attrs.evolve(settings, max_batch=500), server, expected=1200)
    assert sizes[:3] == [500, 500, 200]
    assert versions(server) == list(range(1, 1201))


async def test_auth_error_mid_stream_is_fatal_and_keeps_the_batch(settings: RelaySettings) -> None:
    publish(settings.redis_url, 3)
    server = ScriptedCentrifugo(status(401))
    stop = asyncio.Event()
    transport = httpx.MockTransport(server.handle)
    with pytest.raises(CentrifugoAuthError):
        await asyncio.wait_for(serve(settings, stop=stop, transport=transport), 20)
    client = redis.Redis.from_url(settings.redis_url)
    shard = Keyspace(shards=SHARDS).all_shards()
    assert sum(client.llen(k.inflight) + client.llen(k.queue) for k in shard) == 3
    assert not list(iter_dead_letters(client, Keyspace(shards=SHARDS)))


async def test_leftovers_in_flight_are_delivered_first(settings: RelaySettings) -> None:
    """A relay that died mid-batch left messages in flight: they go out before the queue."""
    publish(settings.redis_url, 6)
    client = redis.Redis.from_url(settings.redis_url)
    (keys,) = [k for k in Keyspace(shards=SHARDS).all_shards() if client.llen(k.queue)]
    for _ in range(3):  # what the dead relay had claimed
        client.lmove(keys.queue, keys.inflight, "LEFT", "RIGHT")
    server = ScriptedCentrifugo()
    await relay_through(settings, server, expected=6)
    assert versions(server) == [1, 2, 3, 4, 5, 6]
    assert server.requests == 2  # the in-flight batch, then the queue
