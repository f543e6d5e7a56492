"""The outbox mode's backend process: ``python -m examples.app.backend --fd N``.

Started (and started again after it dies) by the launcher's ``Supervisor``,
which passes the listening socket's file descriptor and, in
``$EXAMPLE_APP_SETTINGS``, the app's settings and the address of the stack
controls it keeps. Prints ``backend ready`` once it serves.

Every answer carries ``Connection: close``. A browser resends a request,
even a POST, when a connection it *reused* closes without an answer: a save
whose backend died after the commit would be sent again to the next backend
and committed twice. On a fresh connection a dropped request is reported to the
page instead (``Failed to fetch``), which is what a crash looks like.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .__main__ import serve
from .controls import RemoteControls
from .server import create_app
from .supervisor import READY_LINE, SETTINGS_ENV, settings_from_json


class CloseConnections:
    """ASGI middleware: ``Connection: close`` on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_closing)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.app.backend")
    parser.add_argument("--fd", type=int, required=True, help="the inherited listening socket")
    args = parser.parse_args()
    settings, controls_url, controls_token = settings_from_json(os.environ[SETTINGS_ENV])
    sock = socket.socket(fileno=args.fd)
    controls = RemoteControls(controls_url, controls_token)
    try:
        app = CloseConnections(create_app(settings, controls=controls))
        asyncio.run(serve(app, sock, 0, READY_LINE))
    finally:
        controls.close()


if __name__ == "__main__":
    main()
