"""Entries no SDK can decode, written by a producer other than ours: dead-lettered, never a crash.

Any program can push to the lists. These tests play such a producer against a
real Redis, a real Centrifugo and a centrifuge-python subscriber: every entry
must end delivered, expired or dead-lettered with a precise reason, while the
relay keeps delivering the entries behind it and ``stats`` keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis

from centrifugo_async import AsyncPublisher, Keyspace, decode_envelope, shard_for
from centrifugo_async.admin import iter_dead_letters
from centrifugo_async.relay import RelaySettings, serve
from centrifugo_async.relay import worker as worker_module
from devstack import CentrifugoServer
from tests.support.stack import shard_stats, wait_until_drained
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.integration

SHARDS = 4
CHANNEL = "obj:hostile"
"""Each test has its channel: Centrifugo drops a repeated (channel, key, version) for 5 minutes."""
KEY = "doc-1"


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher.from_url(redis_url, shards=SHARDS) as pub:
        yield pub


def raw_entry(version: int, data: bytes, channel: str = CHANNEL) -> bytes:
    """An envelope as a foreign producer writes it: a valid header around ``data`` bytes."""
    header = msgspec.json.encode(
        {"v": 1, "channel": channel, "key": KEY, "version": version, "seq": 1, "shard": 0, "ts": 1}
    )
    return header[:-1] + b',"data":' + data + b"}"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE = [
    (nested(1000), "too_deep", "nested 1000 levels deep"),
    (b'{"name":"caf\xe9"}', "invalid_unicode", "not UTF-8"),
    (b"1" * 5000, "number_out_of_range", "5000 characters"),
    (b'{"x":1e400}', "number_out_of_range", "number 1e400"),
    (b'{"text":"\\ud800"}', "invalid_unicode", "lone surrogate U+D800"),
    (nested(101), "too_deep", "nested 101 levels deep"),
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "centrifugo_async", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def nesting_of(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


@contextlib.asynccontextmanager
async def relay_running(settings: RelaySettings) -> AsyncIterator[asyncio.Task[None]]:
    """An in-process relay, stopped (and its outcome raised) when the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_entries_no_sdk_can_decode_are_dead_lettered_and_the_rest_delivered(
    relay_settings: RelaySettings, centrifugo: CentrifugoServer, publisher: AsyncPublisher
) -> None:
    queue = Keyspace(shards=SHARDS).shard(shard_for(KEY, SHARDS)).queue
    client = redis.Redis.from_url(relay_settings.redis_url)
    client.rpush(queue, *(raw_entry(1 + i, data) for i, (data, _, _) in enumerate(HOSTILE)))
    client.rpush(queue, raw_entry(20, b'{"deepest":' + nested(99) + b"}"))
    await publisher.publish(CHANNEL, {"n": 21}, key=KEY, version=21)
    await publisher.publish(CHANNEL, {"n": 22}, key=KEY, version=22)

    before = run_cli("stats", "--json", "--sample", "0", "--redis-url", relay_settings.redis_url)
    assert before.returncode == 0, before.stderr
    assert "Traceback" not in before.stderr
    (row,) = [r for r in json.loads(before.stdout)["shards"] if r["queued"]]
    assert row["queued"] == len(HOSTILE) + 3
    assert row["oldest_age_ms"] is None, "the head entry has no readable timestamp"

    async with (
        Subscriber(centrifugo.ws_url, [CHANNEL]) as subscriber,
        relay_running(relay_settings) as relay,
    ):
        received = await subscriber.wait_for(3, within=20)
        await wait_until_drained(relay_settings.redis_url, SHARDS, within=20)
        assert not relay.done(), "the relay stopped"
        await publisher.publish(CHANNEL, {"n": 23}, key=KEY, version=23)
        received = await subscriber.wait_for(4, within=20)

    assert [e["version"] for e in received] == [20, 21, 22, 23]
    assert nesting_of(received[0]["data"]["deepest"]) == 99
    letters = [e.letter for e in iter_dead_letters(client, Keyspace(shards=SHARDS))]
    assert len(letters) == len(HOSTILE)
    for letter, (data, reason, detail) in zip(letters, HOSTILE, strict=True):
        assert letter is not None
        assert (letter.reason, letter.channel) == (reason, CHANNEL)
        assert detail in letter.error
        assert letter.original.endswith(b',"data":' + data + b"}"), "the entry was not kept"
    stats = shard_stats(relay_settings.redis_url, SHARDS)
    assert sum(s.dead_letters for s in stats) == len(HOSTILE)
    assert sum(s.delivered for s in stats) == 4

    after = run_cli("stats", "--sample", "0", "--redis-url", relay_settings.redis_url)
    listed = run_cli("dlq", "list", "--redis-url", relay_settings.redis_url)
    assert after.returncode == 0 and listed.returncode == 0, after.stderr + listed.stderr
    assert "Traceback" not in after.stderr + listed.stderr
    assert listed.stdout.count("too_deep") == 2

    # A replay publishes through the same checks: it skips each of them, naming the rule.
    replay = run_cli("dlq", "replay", "--redis-url", relay_settings.redis_url)
    assert replay.returncode == 0, replay.stderr
    assert f"replayed 0 of {len(HOSTILE)} matching dead letters" in replay.stdout
    skipped = replay.stderr.splitlines()
    assert len(skipped) == len(HOSTILE) and "Traceback" not in replay.stderr
    for line, (_, _, detail) in zip(skipped, HOSTILE, strict=True):
        assert "cannot replay: not a valid envelope" in line and detail in line
    assert len(list(iter_dead_letters(client, Keyspace(shards=SHARDS)))) == len(HOSTILE)


async def test_an_entry_that_breaks_the_relay_is_dead_lettered_as_internal(
    relay_settings: RelaySettings,
    centrifugo: CentrifugoServer,
    publisher: AsyncPublisher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug met while preparing one entry costs that entry, not the shard."""
    real = worker_module.publish_command

    def publish_command(channel: str, *args: Any) -> bytes:
        if channel == "obj:poison":
            raise RuntimeError("no idea what to do with this one")
        return real(channel, *args)

    monkeypatch.setattr(worker_module, "publish_command", publish_command)
    caplog.set_level(logging.INFO, logger="centrifugo_async.relay")
    await publisher.publish("obj:internal", {"n": 1}, key=KEY, version=1)
    await publisher.publish("obj:poison", {"n": 2}, key=KEY, version=2)
    await publisher.publish("obj:internal", {"n": 3}, key=KEY, version=3)
    await publisher.publish("obj:poison", {"n": 4}, key=KEY, version=4)
    async with (
        Subscriber(centrifugo.ws_url, ["obj:internal"]) as subscriber,
        relay_running(relay_settings),
    ):
        received = await subscriber.wait_for(2, within=20)
        await wait_until_drained(relay_settings.redis_url, SHARDS, within=20)

    assert [e["version"] for e in received] == [1, 3]
    client = redis.Redis.from_url(relay_settings.redis_url)
    letters = [e.letter for e in iter_dead_letters(client, Keyspace(shards=SHARDS))]
    assert [(x.reason, x.channel) for x in letters if x] == [("internal", "obj:poison")] * 2
    assert {x.error for x in letters if x} == {"RuntimeError: no idea what to do with this one"}
    assert [decode_envelope(x.original).version for x in letters if x] == [2, 4]
    failures = [r for r in caplog.records if r.getMessage().startswith("cannot prepare")]
    assert [bool(r.exc_info) for r in failures] == [True, False], "one traceback per error"


async def test_a_worker_that_crashes_is_restarted_and_logs_its_traceback_once(
    relay_settings: RelaySettings,
    centrifugo: CentrifugoServer,
    publisher: AsyncPublisher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three crashes in a row with the same error: three log lines, one traceback, no exit."""
    crashes = 3
    real = worker_module.ShardWorker._process

    async def process(self: worker_module.ShardWorker, *args: Any) -> None:
        nonlocal crashes
        if crashes:
            crashes -= 1
            raise ValueError("state nobody foresaw")
        await real(self, *args)

    monkeypatch.setattr(worker_module.ShardWorker, "_process", process)
    await publisher.publish("obj:restart", {"n": 1}, key=KEY, version=1)
    await publisher.publish("obj:restart", {"n": 2}, key=KEY, version=2)
    caplog.set_level(logging.INFO, logger="centrifugo_async.relay")
    async with (
        Subscriber(centrifugo.ws_url, ["obj:restart"]) as subscriber,
        relay_running(relay_settings),
    ):
        received = await subscriber.wait_for(2, within=20)
        await wait_until_drained(relay_settings.redis_url, SHARDS, within=20)

    assert [e["version"] for e in received] == [1, 2]
    crashed = [r for r in caplog.records if r.getMessage().startswith("worker crashed")]
    assert len(crashed) == 3
    assert crashed[0].error == "ValueError: state nobody foresaw"  # type: ignore[attr-defined]
    assert [bool(r.exc_info) for r in crashed] == [True, False, False]
    stats = shard_stats(relay_settings.redis_url, SHARDS)
    assert sum(s.dead_letters for s in stats) == 0
