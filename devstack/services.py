"""Start, stop and restart real servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from .process import ChildProcess, Managed

DEV_API_KEY = "dev-api-key"
DEV_HMAC_SECRET = "dev-hmac-secret"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _free_port_with_bus() -> int:
    """A free port p <= 55535 whose cluster bus port p + 10000 is free too."""
    for _ in range(100):
        port = random.randint(20_000, 55_535)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind((LOOPBACK, candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def find_centrifugo() -> str:
    """The Centrifugo binary: $CENTRIFUGO_BIN, then PATH, then Go's bin directory."""
    candidates = [
        os.environ.get("CENTRIFUGO_BIN"),
        shutil.which("centrifugo"),
        str(Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / "centrifugo"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError(
        "centrifugo binary not found: run scripts/setup (or set CENTRIFUGO_BIN)"
    )


class _Server(ChildProcess):
    """A server on a port of 127.0.0.1: ready once it answers there; it can be
    stopped and started again on the same port."""

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        super().__init__(stop_timeout=15.0)
        self.port = port or free_port()
        self.cwd = self.workdir

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} on port {self.port}"

    def restart(self) -> None:
        self.stop()
        self.start()


class RedisServer(_Server):
    """Debian's redis-server bound to loopback.

    No persistence by default; ``persistent=True`` turns on the append-only file
    (fsync on every write) so data survives a restart. ``password`` sets
    ``requirepass``; ``url`` then carries it. ``maxmemory`` (bytes) caps the
    memory with the policy the operations guide recommends, ``noeviction``:
    once used memory reaches the cap, Redis refuses commands that may grow it.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        persistent: bool = False,
        maxmemory: int | None = None,
    ) -> None:
        super().__init__(port)
        self.password = password
        self.persistent = persistent
        self.maxmemory = maxmemory

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server not found: run scripts/setup")
        durability = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        auth = ["--requirepass", self.password] if self.password else []
        memory = (
            ["--maxmemory", str(self.maxmemory), "--maxmemory-policy", "noeviction"]
            if self.maxmemory
            else []
        )
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            *durability,
            *auth,
            *memory,
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "yes",
        ]

    def ready(self) -> bool:
        with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
            if self.password:
                sock.sendall(f"AUTH {self.password}\r\n".encode())
                if not sock.recv(16).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")


class RedisCluster(Managed):
    """A small Redis Cluster on loopback: ``nodes`` primaries, no replicas.

    Each node is a ``redis-server --cluster-enabled yes``; ``redis-cli --cluster
    create`` assigns the slots. ``url`` points at the first node; cluster clients
    discover the rest.
    """

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = [_ClusterNode() for _ in range(nodes)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> Self:
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> Self:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli not found: run scripts/setup")
        addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(
                [cli, "-p", str(self.nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            if "cluster_state:ok" in info:
                return self
            time.sleep(0.1)
        raise TimeoutError("redis cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class _ClusterNode(RedisServer):
    """A cluster node: its bus listens on port + 10000, so both must be free."""

    name = "redis-cluster-node"

    def __init__(self) -> None:
        super().__init__(_free_port_with_bus())

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.workdir / "nodes.conf"),
            "--cluster-node-timeout",
            "5000",
        ]


def centrifugo_config(port: int, api_key: str = DEV_API_KEY) -> dict[str, Any]:
    """A v6 config for local use: loopback only, anonymous subscribers allowed.

    Namespace ``obj`` keeps history (so recovery and ``version`` work); channels
    without a namespace are allowed too. Any other namespace is unknown (code 102).
    """
    namespace = {
        "history_size": 1000,
        "history_ttl": "300s",
        "force_recovery": True,
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "allow_history_for_subscriber": True,
    }
    return {
        "http_server": {"address": LOOPBACK, "port": port},
        "http_api": {"key": api_key},
        "log": {"level": "info"},
        "client": {
            "token": {"hmac_secret_key": DEV_HMAC_SECRET},
            "allow_anonymous_connect_without_token": True,
            "allowed_origins": ["http://localhost:*", "http://127.0.0.1:*"],
        },
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            },
            "namespaces": [{"name": "obj", **namespace}],
        },
        "health": {"enabled": True},
        "prometheus": {"enabled": True},
    }


def merge_config(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``: nested mappings merge, anything else replaces."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_config(current, value)
        else:
            merged[key] = value
    return merged


class CentrifugoServer(_Server):
    """A real Centrifugo v6 on loopback with the config from ``centrifugo_config``."""

    name = "centrifugo"

    def __init__(
        self,
        port: int | None = None,
        api_key: str = DEV_API_KEY,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        """``extra_config`` is merged into ``centrifugo_config`` (nested mappings key
        by key), e.g. ``{"consumers": [...]}`` for the benchmarks."""
        super().__init__(port)
        self.api_key = api_key
        self.config_path = self.workdir / "config.json"
        config = merge_config(centrifugo_config(self.port, api_key), extra_config or {})
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/connection/websocket"

    def command(self) -> list[str]:
        return [find_centrifugo(), "-c", str(self.config_path)]

    def ready(self) -> bool:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/health", timeout=0.5) as r:
            return bool(r.status == 200)


class RelayProcess(ChildProcess):
    """``centrifugo-async relay`` as a child process, for crash and signal tests.

    Its metrics endpoint is off unless ``extra`` sets ``--metrics-port``, so that
    several relays (and several test runs) never fight over a port.
    """

    name = "relay"

    def __init__(self, redis_url: str, api_url: str, api_key: str, *extra: str) -> None:
        metrics = () if "--metrics-port" in extra else ("--metrics-port", "0")
        super().__init__(
            [
                sys.executable,
                "-m",
                "centrifugo_async",
                "relay",
                "--redis-url",
                redis_url,
                "--api-url",
                api_url,
                *metrics,
                *extra,
            ],
            env={**os.environ, "CENTRIFUGO_API_KEY": api_key},
        )

    def close(self) -> None:
        """SIGKILL, not SIGTERM: a test that wanted a clean exit already stopped it."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
