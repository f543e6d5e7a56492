"""Run the example app with its services: ``scripts/example`` (or ``python -m examples.app``).

Starts Redis, Centrifugo and the relay on 127.0.0.1 (free ports), then the
Starlette backend with uvicorn, and prints the URL to open. Ctrl-C (or SIGTERM,
or ``--seconds``) stops everything.

``--outbox`` stores the rows in a private PostgreSQL instead of SQLite and
publishes through the transactional outbox, with the forwarder in the stack.
The backend then runs as a supervised child process (supervisor.py) that the
page may crash right after a commit and that comes back on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = REPO_ROOT / ".run" / "example-app.sqlite3"


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="scripts/example", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("EXAMPLE_PORT", "8080")),
        help="port of the app on 127.0.0.1; 0 picks a free one [env: EXAMPLE_PORT] (8080)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help="SQLite file; created and seeded when missing (.run/example-app.sqlite3)",
    )
    parser.add_argument(
        "--outbox",
        action="store_true",
        help="PostgreSQL + transactional outbox mode: a private PostgreSQL cluster (fresh each "
        "run), the outbox forwarder, and a backend that may crash right after a commit",
    )
    parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--channel", default="obj:prices", help="Centrifugo channel (obj:prices)")
    parser.add_argument("--redis-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--centrifugo-port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--until-stdin-closes",
        action="store_true",
        help="also stop when standard input closes (ties our lifetime to a test harness)",
    )
    args = parser.parse_args()
    if args.outbox and args.db is not None:
        parser.error("--db is the SQLite file; --outbox keeps the rows in PostgreSQL")
    if args.db is None:
        args.db = DEFAULT_DB
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_when_stdin_closes() -> None:
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGTERM)


async def serve(app: ASGIApp, sock: socket.socket, seconds: float, banner: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # it failed to start: raise why
            return
        await asyncio.sleep(0.05)
    print(banner, flush=True)
    if seconds > 0:
        asyncio.get_running_loop().call_later(seconds, setattr, server, "should_exit", True)
    await task


def main() -> None:
    args = parse_args()
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{exc}: run scripts/setup (or pip install -e '.[example]')")

    # Bind first: a busy port fails before anything is started.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, args.port))
    except OSError as exc:
        sys.exit(f"cannot listen on {LOOPBACK}:{args.port}: {exc} (try --port 0)")
    url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"

    # SIGTERM stops like Ctrl-C: every service is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.until_stdin_closes:
        threading.Thread(target=_stop_when_stdin_closes, daemon=True).start()
    try:
        if args.outbox:
            run_outbox_mode(args, sock, url)
        else:
            run_sqlite_mode(args, sock, url)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    print("stopped", flush=True)


def _stopping(seconds: float) -> str:
    return "Ctrl-C stops everything" if seconds <= 0 else f"stopping in {seconds:g} s"


def run_sqlite_mode(args: argparse.Namespace, sock: socket.socket, url: str) -> None:
    """The stack, then the backend in this process (uvicorn on ``sock``); until interrupted."""
    from .server import AppSettings, create_app
    from .stack import LocalStack

    with LocalStack(
        shards=args.shards,
        redis_port=args.redis_port or None,
        centrifugo_port=args.centrifugo_port or None,
    ) as stack:
        settings = AppSettings(
            db_path=args.db.resolve(),
            redis_url=stack.redis.url,
            ws_url=stack.centrifugo.ws_url,
            shards=args.shards,
            channel=args.channel,
        )
        app = create_app(settings, controls=stack)
        banner = "\n".join(
            [
                f"redis       {stack.redis.url}",
                f"centrifugo  {stack.centrifugo.api_url}",
                f"websocket   {stack.centrifugo.ws_url}",
                f"relay       pid {stack.relay_pid()}, log {stack.relay.log_path}",
                f"database    {settings.db_path}",
                f"channel     {settings.channel}",
                "",
                f"open        {url}",
                "",
                _stopping(args.seconds),
            ]
        )
        asyncio.run(serve(app, sock, args.seconds, banner))


def run_outbox_mode(args: argparse.Namespace, sock: socket.socket, url: str) -> None:
    """The stack with PostgreSQL and the forwarder, the stack controls served to the
    backend, and the backend as a supervised child on ``sock``; until interrupted."""
    from .controls import ControlServer
    from .server import AppSettings
    from .stack import LocalStack
    from .supervisor import BackendProcess, Supervisor, settings_to_json

    sock.listen(128)  # connections wait here while a crashed backend comes back
    with contextlib.ExitStack() as running:
        stack = running.enter_context(
            LocalStack(
                shards=args.shards,
                redis_port=args.redis_port or None,
                centrifugo_port=args.centrifugo_port or None,
                outbox=True,
            )
        )
        assert stack.postgres_dsn is not None and stack.forwarder is not None
        settings = AppSettings(
            postgres_dsn=stack.postgres_dsn,
            redis_url=stack.redis.url,
            ws_url=stack.centrifugo.ws_url,
            shards=args.shards,
            channel=args.channel,
            crash_hooks=True,
        )
        supervisor: Supervisor | None = None

        def status() -> dict[str, Any]:
            backend = supervisor.status() if supervisor is not None else {}
            return {**stack.status(), **backend}

        controls = ControlServer(status, stack.actions()).start()
        running.callback(controls.close)
        backend = BackendProcess(sock, settings_to_json(settings, controls.url, controls.token))
        supervisor = Supervisor(backend)
        running.callback(supervisor.close)
        supervisor.start()
        banner = [
            f"redis       {stack.redis.url}",
            f"centrifugo  {stack.centrifugo.api_url}",
            f"websocket   {stack.centrifugo.ws_url}",
            f"relay       pid {stack.relay_pid()}, log {stack.relay.log_path}",
            f"database    {settings.postgres_dsn}",
            f"forwarder   pid {stack.forwarder_pid()}, log {stack.forwarder.log_path}",
            f"backend     pid {backend.pid}, log {backend.log_path}",
            f"channel     {settings.channel}",
            "",
            f"open        {url}",
            "",
            _stopping(args.seconds),
        ]
        print("\n".join(banner), flush=True)
        threading.Event().wait(args.seconds if args.seconds > 0 else None)


if __name__ == "__main__":
    main()
