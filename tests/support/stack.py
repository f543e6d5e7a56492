"""Small helpers over Redis and Centrifugo used by several integration tests."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import redis

from centrifugo_async import Keyspace
from centrifugo_async.admin import ShardStats, collect_stats
from devstack import CentrifugoServer


async def wait_until(condition: Callable[[], bool], within: float, every: float = 0.05) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(every)


def shard_stats(redis_url: str, shards: int) -> list[ShardStats]:
    client = redis.Redis.from_url(redis_url)
    try:
        return collect_stats(client, Keyspace(shards=shards))
    finally:
        client.close()


async def wait_until_drained(redis_url: str, shards: int, within: float) -> list[ShardStats]:
    """Wait until every queue and in-flight list is empty."""
    async with asyncio.timeout(within):
        while True:
            stats = shard_stats(redis_url, shards)
            if all(s.queued == 0 and s.in_flight == 0 for s in stats):
                return stats
            await asyncio.sleep(0.1)


def history(centrifugo: CentrifugoServer, channel: str) -> list[dict[str, Any]]:
    """The channel's history as Centrifugo holds it (publication ``data`` only)."""
    request = urllib.request.Request(
        f"{centrifugo.api_url}/history",
        data=json.dumps({"channel": channel, "limit": 10_000}).encode(),
        headers={"X-API-Key": centrifugo.api_key},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        reply = json.load(response)
    return [p["data"] for p in reply["result"].get("publications", [])]
