"""The whole pipeline on one machine: ``scripts/demo`` (or ``python -m examples.demo``).

Starts Redis and Centrifugo on loopback, runs the relay as its own process,
publishes price updates of a few objects through ``AsyncPublisher`` and prints
what a WebSocket subscriber receives. Stops on Ctrl-C or after ``--seconds``: the
publisher first, then (once what it published has arrived, or after a few seconds)
the subscriber and the relay, with one summary line; the servers last, because
they run in sessions of their own (devstack) and do not see the terminal's Ctrl-C.
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


DRAIN_SECONDS = 10.0


class PrintPublications(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.received = 0
        self.arrived = asyncio.Event()

    async def wait_for(self, count: int, within: float) -> int:
        """Wait until ``count`` publications arrived or ``within`` s passed; the count."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.received < count:
                    self.arrived.clear()
                    await self.arrived.wait()
        return self.received

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.received += 1
        self.arrived.set()
        env = ctx.pub.data
        lag_ms = time.time_ns() // 1_000_000 - env["ts"]
        print(
            f"received  {env['key']:<8} v{env['version']:<4} shard={env['shard']:<2} "
            f"seq={env['seq']:<5} lag={lag_ms}ms data={json.dumps(env['data'])}",
            flush=True,
        )


async def publish_updates(redis_url: str, shards: int, rate: float, stop: asyncio.Event) -> int:
    """Publish until ``stop`` is set; the number of updates published."""
    published = 0
    versions: dict[str, int] = {}
    async with AsyncPublisher.from_url(redis_url, shards=shards) as publisher:
        while not stop.is_set():
            key = f"item-{random.randint(1, 8)}"
            versions[key] = versions.get(key, 0) + 1
            price = round(random.uniform(10, 100), 2)
            await publisher.publish(CHANNEL, {"price": price}, key=key, version=versions[key])
            published += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
    return published


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
        printer = PrintPublications()
        subscription = client.new_subscription(CHANNEL, events=printer)
        await subscription.subscribe()
        publisher = asyncio.create_task(publish_updates(redis.url, args.shards, args.rate, stop))
        try:
            await stop.wait()
        finally:
            published = await publisher
            received = await printer.wait_for(published, within=DRAIN_SECONDS)
            await client.disconnect()
            code = relay.stop()
            stats_client = redis_py.Redis.from_url(redis.url)
            try:
                stats = collect_stats(stats_client, Keyspace(shards=args.shards))
            finally:
                stats_client.close()
            print(
                f"\nstopped: published {published} updates, received {received}; "
                f"relay exited with {code}, {sum(s.queued for s in stats)} still queued, "
                f"{sum(s.dead_letters for s in stats)} dead letters",
                flush=True,
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
