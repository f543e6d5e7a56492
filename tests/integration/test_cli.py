"""The ``centrifugo-async`` commands, run as a user would, against a real Redis."""

from __future__ import annotations

import json
import os
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
from centrifugo_async.cli import ExitCode, main
from centrifugo_async.protocol.deadletter import encode_dead_letter
from devstack import free_port


def run(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "centrifugo_async", *args],
        capture_output=True,
        text=True,
        timeout=30,
        input=input,
        env=None if env is None else {**os.environ, **env},
    )


def test_publish_then_stats(redis_url: str) -> None:
    Publisher.from_url(redis_url, shards=4).ensure_topology()
    result = run(
        "publish",
        "obj:1",
        '{"status": "paid"}',
        "--key",
        "order:1",
        "--object-version",
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
        "publish", "c", "{nope", "--key", "k", "--object-version", "1", "--redis-url", redis_url
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
        "--object-version",
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


def test_every_command_that_prints_a_result_prints_json(redis_url: str) -> None:
    keyspace = dead_letter_some(redis_url)
    client = redis.Redis.from_url(redis_url)
    runner = CliRunner()

    def as_json(*args: str, input: str | None = None) -> object:
        result = runner.invoke(main, [*args, "--json", "--redis-url", redis_url], input=input)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    listed = runner.invoke(main, ["dlq", "list", "--json", "--redis-url", redis_url])
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["reason"] for r in records) == ["invalid_envelope", "rejected", "rejected"]

    dry = as_json("dlq", "replay", "--dry-run")
    assert dry == {"dry_run": True, "matched": 3, "replayed": 2, "skipped": [dry["skipped"][0]]}  # type: ignore[index]
    assert "cannot replay" in dry["skipped"][0]  # type: ignore[index]
    replayed = as_json("dlq", "replay", "--channel", "orders:*")
    assert replayed == {"dry_run": False, "matched": 1, "replayed": 1, "skipped": []}
    # The question goes to stderr, so stdout stays one JSON document. A real process:
    # CliRunner echoes the typed answer to stdout in some click versions (8.2), a
    # terminal does not.
    asked = subprocess.run(
        [
            *(sys.executable, "-m", "centrifugo_async", "dlq", "purge", "--channel", "chat:*"),
            *("--json", "--redis-url", redis_url),
        ],
        input="y\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout) == {"purged": 1}
    assert "Delete the matching dead letters for good?" in asked.stderr
    assert as_json("dlq", "purge", "--yes") == {"purged": 1}

    published = as_json("publish", "obj:1", '{"n": 1}', "--key", "k", "--object-version", "7")
    envelope = published["envelope"]  # type: ignore[index]
    assert published["prefix"] == "centrifugo.publish"  # type: ignore[index]
    assert (envelope["channel"], envelope["key"], envelope["version"]) == ("obj:1", "k", 7)
    assert envelope["shard"] == shard_for("k", 2) and envelope["data"] == {"n": 1}
    queue = client.lrange(keyspace.shard(envelope["shard"]).queue, 0, -1)
    assert envelope["seq"] in [decode_envelope(raw).seq for raw in queue]

    stats = as_json("stats", "--sample", "0")
    assert sum(row["queued"] for row in stats["shards"]) == 2  # type: ignore[index]

    for key in [k for shard in keyspace.all_shards() for k in (shard.queue, shard.inflight)]:
        client.delete(key)
    assert as_json("reshard", "--shards", "2") == {
        "prefix": "centrifugo.publish",
        "before": 2,
        "after": 2,
        "changed": False,
    }
    assert as_json("reshard", "--shards", "3")["changed"] is True  # type: ignore[index]
    client.close()


def test_publish_version_is_a_deprecated_name_of_object_version(redis_url: str) -> None:
    old = run("publish", "obj:1", "{}", "--key", "k", "--version", "4", "--redis-url", redis_url)
    assert old.returncode == 0 and "version=4 " in old.stdout
    assert "--version is deprecated: use --object-version" in old.stderr
    both = run(
        *("publish", "obj:1", "{}", "--key", "k", "--version", "4", "--object-version", "4"),
    )
    assert both.returncode == ExitCode.USAGE and "give --object-version once" in both.stderr


def test_operator_commands_read_their_settings_from_the_environment(redis_url: str) -> None:
    Publisher.from_url(redis_url, shards=3, prefix="app.events").ensure_topology()
    env = {"CENTRIFUGO_ASYNC_REDIS_URL": redis_url, "CENTRIFUGO_ASYNC_PREFIX": "app.events"}
    stats = run("stats", "--json", env={**env, "CENTRIFUGO_ASYNC_STATS_SAMPLE": "0"})
    assert stats.returncode == 0, stats.stderr
    assert len(json.loads(stats.stdout)["shards"]) == 3
    flag_wins = run("stats", "--prefix", "never.used", env=env)
    assert flag_wins.returncode == ExitCode.ERROR and "'never.used'" in flag_wins.stderr


def test_replay_shows_a_bar_on_a_terminal_and_plain_lines_elsewhere(redis_url: str) -> None:
    dead_letter_some(redis_url)
    args = [sys.executable, "-m", "centrifugo_async", "dlq", "replay", "--dry-run"]
    args += ["--redis-url", redis_url]
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=terminal, text=True)
        os.close(terminal)
        terminal = -1
        stdout, _ = process.communicate(timeout=30)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process is gone and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert process.returncode == 0 and "would replay 2 of 3" in stdout
    bar = shown.decode()
    assert "checking dead letters" in bar and "3/3" in bar and "#" in bar, bar
    assert "cannot replay" in bar, "the skipped letter is still reported"

    piped = run(*args[3:])
    assert piped.returncode == 0 and "would replay 2 of 3" in piped.stdout
    assert "3/3" not in piped.stderr and "\r" not in piped.stderr
    assert piped.stderr.count("\n") == 1, "a short run prints no progress line, only the skip"


def test_outbox_init_prints_json(postgres_dsn: str) -> None:
    runner = CliRunner()
    created = runner.invoke(main, ["outbox", "init", "--json", "--dsn", postgres_dsn])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout) == {
        "table": "centrifugo_outbox",
        "schema_version": 1,
        "created": True,
    }
    again = runner.invoke(main, ["outbox", "init", "--json", "--dsn", postgres_dsn])
    assert json.loads(again.stdout)["created"] is False
    conflict = runner.invoke(main, ["outbox", "init", "--json", "--print"])
    assert conflict.exit_code == ExitCode.USAGE
