"""The ``centrifugo-async`` commands, run as a user would, against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from click.testing import CliRunner

from centrifugo_async import (
    DeadLetter,
    Keyspace,
    Message,
    Publisher,
    decode_envelope,
    encode_envelope,
    shard_for,
)
from centrifugo_async.cli import main
from centrifugo_async.protocol.deadletter import encode_dead_letter
from devstack import free_port


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "centrifugo_async", *args],
        capture_output=True,
        text=True,
        timeout=30,
        input=input,
    )


def test_publish_then_stats(redis_url: str) -> None:
    Publisher.from_url(redis_url, shards=4).ensure_topology()
    result = run(
        "publish",
        "obj:1",
        '{"status": "paid"}',
        "--key",
        "order:1",
        "--version",
        "3",
        "--tag",
        "kind=update",
        "--ttl-ms",
        "5000",
        "--redis-url",
        redis_url,
    )
    assert result.returncode == 0, result.stderr
    shard = shard_for("order:1", 4)
    assert f"shard={shard} seq=1" in result.stdout

    stats = run("stats", "--json", "--sample", "0", "--redis-url", redis_url)
    rows = json.loads(stats.stdout)["shards"]
    assert len(rows) == 4
    assert rows[shard]["queued"] == 1 and rows[shard]["oldest_age_ms"] is not None
    table = run("stats", "--sample", "0.2", "--redis-url", redis_url).stdout
    assert "total queued=1 in_flight=0 dead_letters=0 msg/s=0" in table
    assert "relays (0): none" in table


def test_clear_errors_for_bad_flags_and_unreachable_redis(redis_url: str) -> None:
    bad_json = run(
        "publish", "c", "{nope", "--key", "k", "--version", "1", "--redis-url", redis_url
    )
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    bad_version = run("publish", "c", "1", "--key", "k", "--version", "-1")
    assert bad_version.returncode == 2 and "--version" in bad_version.stderr
    bad_tag = run(
        "publish",
        "c",
        "1",
        "--key",
        "k",
        "--version",
        "1",
        "--tag",
        "oops",
        "--redis-url",
        redis_url,
    )
    assert bad_tag.returncode == 2 and "NAME=VALUE" in bad_tag.stderr
    down = run("stats", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == 1 and "Redis is unavailable" in down.stderr
    nothing = run("stats", "--redis-url", redis_url, "--prefix", "never.used")
    assert (
        nothing.returncode == 1 and "nothing is recorded for prefix 'never.used'" in nothing.stderr
    )
    no_key = run("relay", "--redis-url", redis_url)
    assert no_key.returncode == 1 and "api_key is empty" in no_key.stderr
    for result in (bad_json, bad_version, down, nothing, no_key):
        assert "Traceback" not in result.stderr


def dead_letter_some(redis_url: str) -> Keyspace:
    """Two rejected messages and one garbage entry, as the relay records them."""
    keyspace = Keyspace(shards=2)
    client = redis.Redis.from_url(redis_url)
    with Publisher(client, shards=2) as publisher:
        envelopes = publisher.publish_many(
            [Message("orders:1", {"n": 1}, "a", 1), Message("chat:1", {"n": 2}, "b", 1)]
        )
    for k in keyspace.all_shards():
        client.delete(k.queue)
    for envelope in envelopes:
        letter = DeadLetter.for_payload(
            encode_envelope(envelope),
            shard=envelope.shard,
            reason="rejected",
            error="unknown channel",
            code=102,
            channel=envelope.channel,
        )
        client.rpush(keyspace.shard(envelope.shard).dlq, encode_dead_letter(letter))
    garbage = DeadLetter.for_payload(b"\xff", shard=0, reason="invalid_envelope", error="bad")
    client.rpush(keyspace.shard(0).dlq, encode_dead_letter(garbage))
    return keyspace


def test_dlq_list_replay_and_purge(redis_url: str) -> None:
    keyspace = dead_letter_some(redis_url)
    client = redis.Redis.from_url(redis_url)
    runner = CliRunner()

    listed = runner.invoke(main, ["dlq", "list", "--redis-url", redis_url])
    assert listed.exit_code == 0
    assert listed.output.count("reason=") == 3
    only_orders = runner.invoke(
        main, ["dlq", "list", "--redis-url", redis_url, "--channel", "orders:*"]
    )
    assert only_orders.output.count("reason=") == 1 and "orders:1" in only_orders.output

    dry = runner.invoke(
        main, ["dlq", "replay", "--dry-run", "--redis-url", redis_url, "--error", "102"]
    )
    assert dry.exit_code == 0 and "would replay 2 of 2" in dry.output
    assert sum(client.llen(k.queue) for k in keyspace.all_shards()) == 0

    replay = runner.invoke(
        main, ["dlq", "replay", "--redis-url", redis_url, "--channel", "orders:*"]
    )
    assert replay.exit_code == 0 and "replayed 1 of 1" in replay.output
    (raw,) = [e for k in keyspace.all_shards() for e in client.lrange(k.queue, 0, -1)]
    replayed = decode_envelope(raw)
    assert (replayed.channel, replayed.key, replayed.version) == ("orders:1", "a", 1)
    state = keyspace.shard(replayed.shard).state
    assert replayed.seq == int(client.hget(state, "seq")) > 1  # type: ignore[arg-type]
    assert sum(client.llen(k.dlq) for k in keyspace.all_shards()) == 2

    everything = runner.invoke(main, ["dlq", "replay", "--redis-url", redis_url])
    assert "replayed 1 of 2" in everything.output and "(1 not replayable)" in everything.output

    refused = runner.invoke(main, ["dlq", "purge", "--redis-url", redis_url], input="n\n")
    assert refused.exit_code == 1
    purged = runner.invoke(main, ["dlq", "purge", "--yes", "--redis-url", redis_url])
    assert purged.exit_code == 0 and "purged 1 dead letters" in purged.output
    assert sum(client.llen(k.dlq) for k in keyspace.all_shards()) == 0
