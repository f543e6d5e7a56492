"""The whole pipeline on one machine: ``scripts/demo`` (or ``python -m examples.demo``).

Starts Redis and Centrifugo on loopback, runs the relay as its own process,
publishes price updates of a few objects through ``AsyncPublisher`` and prints
what a WebSocket subscriber receives. Stops on Ctrl-C or after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time

import redis as redis_py
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

from centrifugo_async import AsyncPublisher, Keyspace
from centrifugo_async.admin import collect_stats
from devstack import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess

CHANNEL = "obj:demo"


class PrintPublications(SubscriptionEventHandler):
    async def on_publication(self, ctx: PublicationContext) -> None:
        env = ctx.pub.data
        lag_ms = time.time_ns() // 1_000_000 - env["ts"]
        print(
            f"received  {env['key']:<8} v{env['version']:<4} shard={env['shard']:<2} "
            f"seq={env['seq']:<5} lag={lag_ms}ms data={json.dumps(env['data'])}",
            flush=True,
        )


async def publish_updates(redis_url: str, shards: int, rate: float, stop: asyncio.Event) -> None:
    versions: dict[str, int] = {}
    async with AsyncPublisher.from_url(redis_url, shards=shards) as publisher:
        while not stop.is_set():
            key = f"item-{random.randint(1, 8)}"
            versions[key] = versions.get(key, 0) + 1
            price = round(random.uniform(10, 100), 2)
            await publisher.publish(CHANNEL, {"price": price}, key=key, version=versions[key])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.seconds:
        loop.call_later(args.seconds, stop.set)

    with (
        RedisServer(args.redis_port or None) as redis,
        CentrifugoServer(args.centrifugo_port or None) as centrifugo,
    ):
        relay = RelayProcess(
            redis.url, centrifugo.api_url, DEV_API_KEY, "--shards", str(args.shards)
        )
        relay.start()
        print(f"redis      {redis.url}")
        print(f"centrifugo {centrifugo.api_url}  (websocket {centrifugo.ws_url})")
        print(f"relay log  {relay.log_path}")
        print(f"try:       centrifugo-async stats --redis-url {redis.url}")
        print("Ctrl-C to stop\n", flush=True)
        client = Client(centrifugo.ws_url)
        await client.connect()
        subscription = client.new_subscription(CHANNEL, events=PrintPublications())
        await subscription.subscribe()
        publisher = asyncio.create_task(publish_updates(redis.url, args.shards, args.rate, stop))
        try:
            await stop.wait()
        finally:
            await publisher
            await asyncio.sleep(0.5)  # let the last messages arrive
            await client.disconnect()
            code = relay.stop()
            stats = collect_stats(redis_py.Redis.from_url(redis.url), Keyspace(shards=args.shards))
            print(
                f"\nrelay exited with {code}; delivered={sum(s.delivered for s in stats)} "
                f"queued={sum(s.queued for s in stats)} dead_letters="
                f"{sum(s.dead_letters for s in stats)}"
            )
            relay.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds")
    parser.add_argument("--rate", type=float, default=5.0, help="updates per second")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--redis-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--centrifugo-port", type=int, default=0, help="default: a free port")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
