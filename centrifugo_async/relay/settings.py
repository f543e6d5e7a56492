"""``RelaySettings``: everything the relay is configured with, validated up front."""

from __future__ import annotations

import fnmatch
import functools
import os
import socket
import uuid
from typing import Any

import attrs

from ..protocol.keys import DEFAULT_PREFIX
from ..protocol.routing import MAX_SHARDS

__all__ = ["LatePolicy", "RelaySettings"]


def _default_relay_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    schemes = (
        ("redis://", "rediss://", "unix://")
        if attribute.name == "redis_url"
        else (
            "http://",
            "https://",
        )
    )
    if not value.startswith(schemes):
        raise ValueError(f"{attribute.name} must start with one of {schemes}, got {value!r}")


def _shards(_: object, __: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_SHARDS:
        raise ValueError(f"shards must be 1..{MAX_SHARDS}, got {value}")


@attrs.frozen
class LatePolicy:
    """Late-delivery rule for channels matching ``pattern`` (a glob like ``typing:*``).

    ``max_age_ms=None`` means never drop. An envelope's own ``ttl_ms`` wins over
    any policy; without one, the first matching policy decides.
    """

    pattern: str
    max_age_ms: int | None


def _policies(_: object, __: attrs.Attribute[Any], value: tuple[LatePolicy, ...]) -> None:
    for policy in value:
        if not policy.pattern:
            raise ValueError("late_delivery has an empty channel pattern")
        if policy.max_age_ms is not None and policy.max_age_ms < 1:
            raise ValueError(
                f"late_delivery[{policy.pattern!r}] must be a positive duration or 'never', "
                f"got {policy.max_age_ms} ms"
            )


def _log_format(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value not in ("console", "json"):
        raise ValueError(f"log_format must be 'console' or 'json', got {value!r}")


def _log_level(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(f"log_level must be debug, info, warning or error, got {value!r}")


def _port(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"metrics_port must be 0..65535 (0 disables metrics), got {value}")


@attrs.frozen(kw_only=True)
class RelaySettings:
    """Relay configuration. Durations are in seconds.

    ``shards=None`` adopts the count recorded in Redis by the publishers (waiting
    for the first one if nothing is recorded yet); an explicit count must match
    the recorded one, or is recorded when there is none.
    """

    redis_url: str = attrs.field(default="redis://127.0.0.1:6379/0", validator=_url)
    api_url: str = attrs.field(default="http://127.0.0.1:8000/api", validator=_url)
    api_key: str = attrs.field(default="", repr=lambda _: "***")
    redis_cluster: bool = False
    """Connect to a Redis Cluster (through any node given in ``redis_url``)."""
    prefix: str = DEFAULT_PREFIX
    shards: int | None = attrs.field(default=None, validator=_shards)
    max_batch: int = attrs.field(default=500, validator=_positive)
    max_batch_bytes: int = attrs.field(default=1_000_000, validator=_positive)
    lease_ttl: float = attrs.field(default=10.0, validator=_positive)
    request_timeout: float = attrs.field(default=5.0, validator=_positive)
    retry_initial: float = attrs.field(default=0.05, validator=_positive)
    retry_max: float = attrs.field(default=5.0, validator=_positive)
    idle_wait: float = attrs.field(default=1.0, validator=_positive)
    relay_id: str = attrs.field(factory=_default_relay_id)
    late_delivery: tuple[LatePolicy, ...] = attrs.field(
        default=(), converter=tuple, validator=_policies
    )
    """Per channel pattern: drop messages older than this instead of delivering them."""
    forward_version: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Channel patterns whose publications carry the envelope version as Centrifugo's
    ``version``, so Centrifugo itself skips stale ones. Only for channels carrying a
    single object: Centrifugo compares versions per channel, not per key."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int = attrs.field(default=9108, validator=_port)
    """Port of the /metrics and /health endpoint; 0 disables it."""
    stuck_after: float = attrs.field(default=60.0, validator=_positive)
    """/health reports a shard stuck when its oldest message waits longer than this."""
    log_format: str = attrs.field(default="console", validator=_log_format)
    log_level: str = attrs.field(default="info", validator=_log_level)

    def __attrs_post_init__(self) -> None:
        if not self.api_key:
            raise ValueError(
                "api_key is empty: pass --api-key or set CENTRIFUGO_API_KEY "
                "(Centrifugo's http_api.key)"
            )
        if self.max_batch > 4000:
            raise ValueError(f"max_batch must be <= 4000, got {self.max_batch}")

    @property
    def lease_renew_interval(self) -> float:
        """How often leases are renewed (a third of their TTL)."""
        return self.lease_ttl / 3

    def max_age_ms(self, channel: str, ttl_ms: int | None) -> int | None:
        """How old a message for ``channel`` may be when delivered (None: any age)."""
        if ttl_ms is not None:
            return ttl_ms
        return _channel_rules(self.late_delivery, self.forward_version, channel)[0]

    def forwards_version(self, channel: str) -> bool:
        """Whether publications to ``channel`` carry Centrifugo's ``version``."""
        return _channel_rules(self.late_delivery, self.forward_version, channel)[1]


@functools.lru_cache(maxsize=8192)
def _channel_rules(
    late_delivery: tuple[LatePolicy, ...], forward_version: tuple[str, ...], channel: str
) -> tuple[int | None, bool]:
    """(max age, forward version) for a channel; cached, as channels repeat endlessly."""
    max_age = next(
        (p.max_age_ms for p in late_delivery if fnmatch.fnmatchcase(channel, p.pattern)), None
    )
    return max_age, any(fnmatch.fnmatchcase(channel, p) for p in forward_version)
