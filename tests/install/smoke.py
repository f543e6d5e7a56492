"""Smoke test of an installed wheel: ``python -m tests.install.smoke VENV VERSION``.

``scripts/check-install`` runs it with the development virtualenv's Python, which
provides the harness: real Redis and Centrifugo on loopback (``devstack``) and a
WebSocket subscriber (centrifuge-python). Everything under test runs from
``VENV``, a fresh virtualenv holding only the wheel and its dependencies: the
``centrifugo-async`` command, a publisher script started with ``python -I`` from a
temporary directory, and the relay. ``PYTHONPATH`` is dropped from their
environment, so the checkout cannot stand in for the installed package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devstack import DEV_API_KEY, CentrifugoServer, RedisServer, RelayProcess
from tests.support.subscriber import Subscriber

CHANNEL = "obj:smoke"
SHARDS = 4
UPDATES: list[tuple[str, int, dict[str, Any]]] = [
    ("order:1", 1, {"status": "new"}),
    ("order:2", 1, {"status": "new"}),
    ("order:1", 2, {"status": "paid"}),
    ("order:3", 1, {"status": "new"}),
    ("order:2", 2, {"status": "cancelled"}),
    ("order:1", 3, {"status": "sent"}),
]
DEVELOPMENT_ONLY = ["build", "centrifuge", "matplotlib", "mkdocs", "mypy", "pytest", "starlette"]

PUBLISH = """
import json, sys
import centrifugo_async
from centrifugo_async import Message, Publisher

url, shards, channel, updates = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
with Publisher.from_url(url, shards=shards) as publisher:
    publisher.publish_many([Message(channel, data, key, version) for key, version, data in updates])
print(json.dumps({"file": centrifugo_async.__file__, "version": centrifugo_async.__version__}))
"""

FIND_MODULES = """
import importlib.util, json, sys
print(json.dumps([name for name in sys.argv[1:] if importlib.util.find_spec(name)]))
"""


class SmokeFailure(Exception):
    """The installed package did not do what the smoke test expects."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


class Installed:
    """Runs the fresh virtualenv's programs outside the checkout."""

    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(self, program: str, *args: str) -> str:
        result = subprocess.run(
            [str(self.venv / "bin" / program), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        _check(
            result.returncode == 0,
            f"{program} {' '.join(args)[:80]} exited with {result.returncode}:\n{result.stderr}",
        )
        return result.stdout

    def python(self, source: str, *args: str) -> Any:
        return json.loads(self.run("python", "-I", "-c", source, *args))

    def relay(self, redis_url: str, api_url: str) -> RelayProcess:
        relay = RelayProcess(redis_url, api_url, DEV_API_KEY, "--shards", str(SHARDS))
        relay.args = [str(self.venv / "bin" / "centrifugo-async"), *relay.args[3:]]
        relay.env.pop("PYTHONPATH", None)
        return relay


def check_command(installed: Installed, version: str) -> None:
    output = installed.run("centrifugo-async", "--version").strip()
    _check(output.endswith(f"version {version}"), f"--version printed {output!r}")
    print(f"ok  centrifugo-async --version: {output}")
    present = installed.python(FIND_MODULES, *DEVELOPMENT_ONLY)
    _check(not present, f"development-only packages came with the wheel: {present}")
    print(f"ok  none of {', '.join(DEVELOPMENT_ONLY)} installed")


async def check_pipeline(installed: Installed, version: str) -> None:
    with RedisServer() as redis, CentrifugoServer() as centrifugo:
        async with Subscriber(centrifugo.ws_url, [CHANNEL]) as subscriber:
            relay = installed.relay(redis.url, centrifugo.api_url)
            try:
                relay.start()
                published = installed.python(
                    PUBLISH, redis.url, str(SHARDS), CHANNEL, json.dumps(UPDATES)
                )
                _check(
                    Path(published["file"]).is_relative_to(installed.venv),
                    f"the publisher imported {published['file']}, not the installed package",
                )
                _check(published["version"] == version, f"__version__ is {published['version']}")
                print(f"ok  published {len(UPDATES)} updates with {published['file']}")
                try:
                    received = await subscriber.wait_for(len(UPDATES), within=30)
                except TimeoutError:
                    raise SmokeFailure(
                        f"{len(subscriber.received)} of {len(UPDATES)} updates arrived in 30 s;"
                        f" relay log:\n{relay.log()}"
                    ) from None
                delivered = [(e["key"], e["version"], e["data"]) for e in received]
                _check(
                    sorted(delivered, key=lambda u: (u[0], u[1])) == sorted(UPDATES),
                    f"the subscriber received {delivered}",
                )
                for key in {u[0] for u in UPDATES}:
                    versions = [v for k, v, _ in delivered if k == key]
                    _check(versions == sorted(versions), f"{key} arrived out of order: {versions}")
                print(f"ok  the subscriber received all {len(UPDATES)}, in order per key")
                code = relay.stop()
                _check(code == 0, f"the relay exited with {code} on SIGTERM:\n{relay.log()}")
                print("ok  the relay stopped cleanly on SIGTERM")
            finally:
                relay.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.install.smoke", description=__doc__)
    parser.add_argument("venv", type=Path, help="the fresh virtualenv holding the wheel")
    parser.add_argument("version", help="the version the wheel was built with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ca-smoke-") as workdir:
        installed = Installed(args.venv.resolve(), Path(workdir))
        try:
            check_command(installed, args.version)
            asyncio.run(asyncio.wait_for(check_pipeline(installed, args.version), 120))
        except (SmokeFailure, TimeoutError) as exc:
            sys.exit(f"FAIL {str(exc) or 'the smoke test did not finish within 120 s'}")


if __name__ == "__main__":
    main()
