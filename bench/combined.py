"""The outbox forwarder inside the relay's process: what a "relay mode" would be, for measuring.

``python -m bench.combined --dsn DSN --redis-url URL --api-url URL --shards N``
(the API key from ``CENTRIFUGO_API_KEY``)

The project ships the forwarder as a process of its own (docs/outbox.md says
why). To put a number on the alternative, this script runs the two public
entry points, ``outbox.forwarder.forward`` and ``relay.serve``, on one asyncio
loop in one process, with the defaults of their commands and the metrics
endpoints off, until SIGTERM. Rows still go through Redis: a combined mode
that skipped Redis would be a different design (no relay leases, no shard
lists between the database and Centrifugo), not a packaging choice.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from centrifugo_async.outbox.forwarder import forward
from centrifugo_async.outbox.settings import ForwarderSettings
from centrifugo_async.relay import RelaySettings, serve


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relay = RelaySettings(
        redis_url=args.redis_url,
        api_url=args.api_url,
        api_key=os.environ.get("CENTRIFUGO_API_KEY", ""),
        shards=args.shards,
        metrics_port=0,
    )
    forwarder = ForwarderSettings(
        dsn=args.dsn, redis_url=args.redis_url, shards=args.shards, metrics_port=0
    )
    await asyncio.gather(serve(relay, stop=stop), forward(forwarder, stop=stop))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--shards", type=int, default=16)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(parser.parse_args()))
