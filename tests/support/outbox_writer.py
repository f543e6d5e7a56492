"""A backend process that updates objects and dies by SIGKILL right after its last commit.

``python -m tests.support.outbox_writer --dsn DSN --redis-url URL --mode outbox|direct``

- ``outbox``: update + ``outbox.publish`` + commit: the message commits with the change.
- ``direct``: update + commit, then ``Publisher.publish``: the dual write the outbox
  replaces. The process dies between the last commit and its publish, which is
  the window that loses an update.
"""

from __future__ import annotations

import argparse
import os
import signal

import psycopg

from centrifugo_async import Publisher, outbox
from tests.support.outbox import channel_of, key_of, namespace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--mode", choices=["outbox", "direct"], required=True)
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=20)
    args = parser.parse_args()
    publisher = Publisher.from_url(args.redis_url, shards=16)
    space = namespace(args.dsn)
    with psycopg.connect(args.dsn) as conn:
        for n in range(args.transactions):
            obj = n % args.objects
            last = n == args.transactions - 1
            with conn.transaction():
                row = conn.execute(
                    "UPDATE objects SET version = version + 1 WHERE id = %s RETURNING version",
                    (obj,),
                ).fetchone()
                assert row is not None
                version = int(row[0])
                data = {"version": version}
                key = key_of(obj, space)
                if args.mode == "outbox":
                    outbox.publish(conn, channel_of(obj), data, key=key, version=version)
            if last:
                os.kill(os.getpid(), signal.SIGKILL)  # right after the commit
            if args.mode == "direct":
                publisher.publish(channel_of(obj), data, key=key, version=version)


if __name__ == "__main__":
    main()
