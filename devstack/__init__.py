"""Local Redis, Centrifugo and PostgreSQL processes for tests, the demo and benchmarks.

Not part of the published package: it starts real servers on loopback, each in a
temporary directory, on free ports unless told otherwise.
"""

from .forwarder import ForwarderProcess
from .postgres import PostgresServer, find_postgres_bindir
from .process import ChildProcess, stop_together
from .services import (
    DEV_API_KEY,
    CentrifugoServer,
    RedisCluster,
    RedisServer,
    RelayProcess,
    find_centrifugo,
    free_port,
)

__all__ = [
    "DEV_API_KEY",
    "CentrifugoServer",
    "ChildProcess",
    "ForwarderProcess",
    "PostgresServer",
    "RedisCluster",
    "RedisServer",
    "RelayProcess",
    "find_centrifugo",
    "find_postgres_bindir",
    "free_port",
    "stop_together",
]
