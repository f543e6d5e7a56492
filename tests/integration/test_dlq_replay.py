"""``dlq replay`` skips what it cannot replay and keeps each letter's enqueue time.

A letter whose envelope is over the publisher's payload limit used to abort the
whole run (and a dry run did not notice it); a replayed envelope got a fresh
``ts``, so an update with a ``ttl_ms`` was delivered however old it was.
"""

from __future__ import annotations

import msgspec
import redis
from click.testing import CliRunner

from centrifugo_async import (
    DeadLetter,
    Keyspace,
    Message,
    Publisher,
    decode_envelope,
    encode_envelope,
)
from centrifugo_async._clock import now_ms
from centrifugo_async.admin import iter_dead_letters
from centrifugo_async.cli import main
from centrifugo_async.protocol.deadletter import encode_dead_letter
from centrifugo_async.relay import RelaySettings
from tests.support.stack import shard_stats, wait_until_drained

SHARDS = 4
AN_HOUR_AGO = now_ms() - 3_600_000


def dead_letter(client: redis.Redis, keyspace: Keyspace) -> None:
    """Three letters: a fresh update, one over 256 KiB, and an hour-old one with a ttl."""
    with Publisher(client, shards=SHARDS, max_payload_bytes=1 << 20) as publisher:
        fresh, big, stale = publisher.publish_many(
            [
                Message("obj:replay", {"n": 1}, "fresh", 1),
                Message("obj:replay", {"pad": "x" * 300_000}, "big", 1),
                Message("obj:replay", {"n": 3}, "stale", 1, ttl_ms=60_000),
            ]
        )
    for keys in keyspace.all_shards():
        client.delete(keys.queue)
    for envelope in (fresh, big, msgspec.structs.replace(stale, ts=AN_HOUR_AGO)):
        letter = DeadLetter.for_payload(
            encode_envelope(envelope),
            shard=envelope.shard,
            reason="rejected",
            error="unknown channel",
            code=102,
            channel=envelope.channel,
        )
        client.rpush(keyspace.shard(envelope.shard).dlq, encode_dead_letter(letter))


async def test_replay_skips_and_reports_oversized_letters_and_keeps_the_ts(
    running_relay: RelaySettings,
) -> None:
    redis_url = running_relay.redis_url
    keyspace = Keyspace(shards=SHARDS)
    client = redis.Redis.from_url(redis_url)
    dead_letter(client, keyspace)
    runner = CliRunner()

    dry = runner.invoke(main, ["dlq", "replay", "--dry-run", "--redis-url", redis_url])
    replay = runner.invoke(main, ["dlq", "replay", "--redis-url", redis_url])
    for result, verb in ((dry, "would replay"), (replay, "replayed")):
        assert result.exit_code == 0, result.output
        assert f"{verb} 2 of 3 matching dead letters (1 not replayable)" in result.stdout
        (skipped,) = result.stderr.splitlines()
        assert skipped.startswith("shard ") and "cannot replay: envelope for key 'big'" in skipped
        assert "over the limit of 262144 bytes" in skipped

    left = [e.letter for e in iter_dead_letters(client, keyspace)]
    assert [decode_envelope(x.original).key for x in left if x] == ["big"], "it stays"
    await wait_until_drained(redis_url, SHARDS, within=20)
    stats = shard_stats(redis_url, SHARDS)
    # The hour-old update with a 60 s ttl expired instead of being delivered.
    assert (sum(s.delivered for s in stats), sum(s.expired for s in stats)) == (1, 1)
    client.close()
