"""A private PostgreSQL cluster on loopback: initdb into a temporary folder, no system service.

The cluster lives in the server's working directory (data in ``data/``, the unix
socket beside it), listens on 127.0.0.1 only and trusts local connections, so a
test, the demo or a benchmark gets a database in about a second and leaves
nothing behind. PostgreSQL refuses to run as root; when we are root (CI runs so)
the data folder is handed to an unprivileged user (``nobody`` unless
``CA_POSTGRES_USER`` names another) and initdb and the server run as that user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from signal import SIGINT
from typing import Any, Self

from .services import LOOPBACK, _Server

__all__ = ["PostgresServer", "find_postgres_bindir"]

_TOOLS = ("initdb", "postgres")


def _has_tools(folder: Path) -> bool:
    return all((folder / tool).is_file() for tool in _TOOLS)


def _version_key(folder: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,), so the newest installed major wins."""
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)


def find_postgres_bindir() -> Path:
    """The folder holding ``initdb`` and ``postgres``.

    ``$POSTGRES_BINDIR`` first, then Debian's ``/usr/lib/postgresql/<major>/bin``
    (newest major first; Debian keeps the server out of PATH), then PATH, then
    ``pg_config --bindir``.
    """
    candidates: list[Path] = []
    if os.environ.get("POSTGRES_BINDIR"):
        candidates.append(Path(os.environ["POSTGRES_BINDIR"]))
    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    )
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        reply = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
        if reply.returncode == 0:
            candidates.append(Path(reply.stdout.strip()))
    for folder in candidates:
        if _has_tools(folder):
            return folder
    raise FileNotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found: run scripts/setup "
        "(or set POSTGRES_BINDIR)"
    )


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster on 127.0.0.1, superuser ``postgres``, trust auth.

    ``durable=False`` (the default) turns ``fsync`` off: data survives a restart
    or a SIGKILL of the server (the page cache keeps it), just not a power cut,
    which no test needs. ``create_database`` hands each test a fresh database.
    """

    name = "postgres"

    def __init__(self, port: int | None = None, *, durable: bool = False) -> None:
        super().__init__(port)
        self.durable = durable
        self.bindir = find_postgres_bindir()
        self.data_dir = self.workdir / "data"
        self._user = self._unprivileged_user()

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd | None:
        """Who runs the cluster when we are root (None: we are not root, run as ourselves)."""
        if os.geteuid() != 0:
            return None
        return pwd.getpwnam(os.environ.get("CA_POSTGRES_USER", "nobody"))

    def popen_options(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    @property
    def dsn(self) -> str:
        """The ``postgres`` maintenance database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> Self:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        super().start()
        return self

    def _initdb(self) -> None:
        if self._user is not None:
            os.chown(self.workdir, self._user.pw_uid, self._user.pw_gid)
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        reply = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **self.popen_options(),
        )
        if reply.returncode != 0:
            raise RuntimeError(f"initdb failed ({reply.returncode}): {reply.stderr.strip()}")

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "log_min_messages": "warning",
            "log_statement": "none",
        }
        flags = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        return [str(self.bindir / "postgres"), "-D", str(self.data_dir), *flags]

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, timeout: float | None = None, *, sig: int = SIGINT) -> int | None:
        """Fast shutdown (SIGINT) by default: SIGTERM would wait for every client to leave."""
        return super().stop(timeout, sig=sig)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        import psycopg
        from psycopg import sql

        name = name or f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)
