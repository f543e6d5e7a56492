"""The quick start's deployment files work as documented (docs/index.md, examples/deploy/).

A user without a clone copies three files: Centrifugo's ``centrifugo.json``, the
relay's ``relay.env`` and its systemd unit. This test starts a real Centrifugo
with that exact configuration (secrets, address and port from the environment,
as the page says) and the relay with the unit's ``ExecStart`` command line and
the environment file, then publishes and checks that the update reaches the
channel's history. Only what a test machine must change is changed: addresses,
ports and secrets.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from centrifugo_async import Publisher
from devstack import ChildProcess, RedisServer, free_port
from devstack.services import find_centrifugo

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"
INDEX = Path(__file__).resolve().parents[2] / "docs" / "index.md"
API_KEY = "quickstart-api-key"


class _Centrifugo(ChildProcess):
    name = "centrifugo-quickstart"

    def __init__(self, port: int) -> None:
        env = {
            **os.environ,
            "CENTRIFUGO_HTTP_SERVER_ADDRESS": "127.0.0.1",
            "CENTRIFUGO_HTTP_SERVER_PORT": str(port),
            "CENTRIFUGO_HTTP_API_KEY": API_KEY,
            "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY": "quickstart-hmac-secret",
        }
        super().__init__([find_centrifugo(), "-c", str(DEPLOY / "centrifugo.json")], env=env)
        self.port = port

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.port}/health"
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return bool(response.status == 200)


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=VALUE: {line!r}"
            pairs[name.strip()] = value.strip()
    return pairs


def _exec_start(unit: Path) -> list[str]:
    lines = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, "the unit has exactly one ExecStart"
    return shlex.split(lines[0].removeprefix("ExecStart="))


@pytest.fixture
def centrifugo() -> Iterator[_Centrifugo]:
    with _Centrifugo(free_port()) as server:
        yield server


def _history(port: int, channel: str) -> list[object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/history",
        data=json.dumps({"channel": channel, "limit": 100}).encode(),
        headers={"X-API-Key": API_KEY},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return [p["data"] for p in json.load(response)["result"].get("publications", [])]


def _eventually_healthy(port: int, within: float = 20) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as health:
                if health.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    return False


def test_documented_centrifugo_config_is_clean(centrifugo: _Centrifugo) -> None:
    unknown = [line for line in centrifugo.log().splitlines() if "unknown key" in line]
    assert unknown == [], "centrifugo.json has keys Centrifugo v6 does not know"


def test_the_pages_include_the_deployment_files() -> None:
    page = INDEX.read_text()
    for name in ("centrifugo.json", "relay.env", "centrifugo-async-relay.service"):
        assert f'--8<-- "examples/deploy/{name}"' in page


def test_unit_command_line_and_env_file_run_the_relay(centrifugo: _Centrifugo) -> None:
    argv = _exec_start(DEPLOY / "centrifugo-async-relay.service")
    assert Path(argv[0]).name == "centrifugo-async" and argv[1:] == ["relay"]
    program = shutil.which("centrifugo-async", path=str(Path(sys.executable).parent))
    assert program is not None, "the centrifugo-async command is not installed next to python"
    settings = _env_file(DEPLOY / "relay.env")
    assert set(settings) == {
        "CENTRIFUGO_ASYNC_REDIS_URL",
        "CENTRIFUGO_API_URL",
        "CENTRIFUGO_API_KEY",
        "CENTRIFUGO_ASYNC_LOG_FORMAT",
        "CENTRIFUGO_ASYNC_METRICS_PORT",
    }
    metrics_port = free_port()
    with RedisServer() as redis_server:
        env = {
            **os.environ,
            **settings,
            "CENTRIFUGO_ASYNC_REDIS_URL": redis_server.url,
            "CENTRIFUGO_API_URL": f"http://127.0.0.1:{centrifugo.port}/api",
            "CENTRIFUGO_API_KEY": API_KEY,
            "CENTRIFUGO_ASYNC_METRICS_PORT": str(metrics_port),
        }
        with ChildProcess([program, *argv[1:]], env=env) as relay:
            with Publisher.from_url(redis_server.url, shards=4) as publisher:
                publisher.publish("obj:orders", {"status": "paid"}, key="order:42", version=7)
            deadline = time.monotonic() + 30
            received: list[object] = []
            while not received and time.monotonic() < deadline:
                received = _history(centrifugo.port, "obj:orders")
                time.sleep(0.05)
            assert len(received) == 1, relay.log()
            assert received[0]["key"] == "order:42"  # type: ignore[index]
            assert received[0]["data"] == {"status": "paid"}  # type: ignore[index]
            assert _eventually_healthy(metrics_port), relay.log()
            assert relay.stop() == 0
            lines = [line for line in relay.log().splitlines() if line.strip()]
            assert lines and all(json.loads(line)["message"] for line in lines)
