"""The naive worker from the reference article, as a small script.

``python -m bench.naive_worker --redis-url URL --list KEY --api-url URL --in-flight N``

Each of ``N`` loops pops one message off a Redis list (``BLPOP``) and POSTs it
to Centrifugo's ``/api/publish``, which is what the article's Benthos setup does
(``redis_list`` input, ``http_client`` output with ``max_in_flight``). With
``--in-flight 1`` it keeps the order and is bound by round trips; with 20 it is
faster and reorders updates of a key whenever two of them are in flight at once.
It is at most once (the pop happens before the POST) and reads each reply only
to count errors, like the article's setup. It uses the relay's own lean HTTP
client, so the comparison measures the design, not the HTTP library. Runs
until SIGTERM; prints ``ready`` once Redis and Centrifugo answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import redis.asyncio

from centrifugo_async.relay._http11 import KeepAliveClient


async def work(
    client: redis.asyncio.Redis, http: KeepAliveClient, key: str, counts: list[int]
) -> None:
    while True:
        popped = await client.blpop([key], timeout=1)
        if popped is None or not isinstance(popped[1], bytes):
            continue
        response = await http.post("/publish", popped[1])
        counts[0 if response.status == 200 and b'"error"' not in response.body else 1] += 1


async def main(args: argparse.Namespace) -> None:
    client = redis.asyncio.Redis.from_url(args.redis_url, max_connections=args.in_flight + 2)
    http = KeepAliveClient(
        args.api_url,
        {"X-API-Key": args.api_key, "Content-Type": "application/json"},
        timeout=5.0,
        connect_timeout=2.0,
    )
    await client.ping()
    info = await http.post("/info", b"{}")
    if info.status != 200:
        raise SystemExit(
            f"Centrifugo answered /api/info with HTTP {info.status}: {info.body[:200]!r}"
        )
    print("ready", flush=True)
    counts = [0, 0]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [
        asyncio.create_task(work(client, http, args.list, counts)) for _ in range(args.in_flight)
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"published={counts[0]} errors={counts[1]}", flush=True)
    await http.aclose()
    await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--list", default="centrifugo.publish")
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--api-key", default=os.environ.get("CENTRIFUGO_API_KEY", ""))
    parser.add_argument("--in-flight", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
