"""``ForwarderSettings``: what one outbox forwarder needs. Durations are in seconds."""

from __future__ import annotations

import os
import socket
import uuid

import attrs

from ..protocol.keys import DEFAULT_PREFIX
from ..protocol.routing import MAX_SHARDS
from .table import DEFAULT_TABLE

__all__ = ["DSN_ENV", "ForwarderSettings"]

DSN_ENV = "CENTRIFUGO_ASYNC_OUTBOX_DSN"
"""The environment variable the CLI reads the PostgreSQL DSN from."""


def _default_forwarder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _optional_shards(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_SHARDS:
        raise ValueError(f"shards must be 1..{MAX_SHARDS}, got {value!r}")


def _batch(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= 10_000:
        raise ValueError(f"batch must be 1..10000 rows per lane, got {value!r}")


def _port(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"metrics_port must be 0..65535, got {value!r}")


@attrs.frozen(kw_only=True)
class ForwarderSettings:
    """One forwarder: where the rows are, where they go, and its timers."""

    dsn: str
    """PostgreSQL connection string (libpq DSN or URL) of the database with the outbox."""
    redis_url: str
    redis_cluster: bool = False
    prefix: str = DEFAULT_PREFIX
    shards: int | None = attrs.field(default=None, validator=_optional_shards)
    """The shard count to record in Redis if none is; None: as recorded, else 16."""
    table: str = DEFAULT_TABLE
    batch: int = attrs.field(default=500, validator=_batch)
    """Most rows taken from one lane per sweep (a sweep covers every owned lane)."""
    poll_interval: float = attrs.field(default=1.0, validator=_positive)
    """Longest wait between sweeps when no NOTIFY arrives (the fallback for lost wake-ups)."""
    claim_interval: float = attrs.field(default=2.0, validator=_positive)
    """How often free lanes are looked for and taken (a dead forwarder's lanes, new lanes)."""
    retry_initial: float = attrs.field(default=0.1, validator=_positive)
    retry_max: float = attrs.field(default=5.0, validator=_positive)
    stuck_after: float = attrs.field(default=60.0, validator=_positive)
    """/health reports an owned lane whose oldest row is older than this."""
    sample_interval: float = attrs.field(default=5.0, validator=_positive)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = attrs.field(default=9109, validator=_port)
    """Port of /metrics and /health; 0 disables them (the relay's default is 9108)."""
    forwarder_id: str = attrs.Factory(_default_forwarder_id)
