"""``python -m devstack up``: Redis + Centrifugo (+ relay, + PostgreSQL) on loopback until stopped.

Prints one JSON line with the addresses once everything is ready, then waits
for SIGTERM/SIGINT (or, with ``--until-stdin-closes``, for its stdin to close,
which is how a test harness in another language ties our lifetime to its own).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import ExitStack

from .postgres import PostgresServer
from .services import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local services")
    up.add_argument("--redis-port", type=int, default=0, help="0 picks a free port")
    up.add_argument("--centrifugo-port", type=int, default=0, help="0 picks a free port")
    up.add_argument("--relay", action="store_true", help="also run the relay")
    up.add_argument("--shards", type=int, default=16)
    up.add_argument(
        "--relay-freshness", default="", help="the relay's --freshness (default: its own)"
    )
    up.add_argument("--postgres", action="store_true", help="also run a private PostgreSQL cluster")
    up.add_argument("--until-stdin-closes", action="store_true")
    args = parser.parse_args()

    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())

    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer(args.redis_port or None))
        centrifugo = stack.enter_context(CentrifugoServer(args.centrifugo_port or None))
        info = {
            "redis_url": redis.url,
            "api_url": centrifugo.api_url,
            "api_key": DEV_API_KEY,
            "ws_url": centrifugo.ws_url,
            "http_url": f"http://127.0.0.1:{centrifugo.port}",
            "shards": args.shards,
        }
        if args.postgres:
            postgres = stack.enter_context(PostgresServer())
            info["postgres_dsn"] = postgres.dsn
        if args.relay:
            freshness = ["--freshness", args.relay_freshness] if args.relay_freshness else []
            relay = RelayProcess(
                redis.url, centrifugo.api_url, DEV_API_KEY, "--shards", str(args.shards), *freshness
            )
            stack.callback(relay.close)
            stack.callback(relay.stop)
            relay.start()
            info["relay_log"] = str(relay.log_path)
        print(json.dumps(info), flush=True)
        if args.until_stdin_closes:

            def stop_when_stdin_closes() -> None:
                sys.stdin.read()
                stopped.set()

            threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
        stopped.wait()


if __name__ == "__main__":
    main()
