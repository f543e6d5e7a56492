"""``RelaySettings``: everything the relay is configured with, validated up front."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Self

import attrs

from ..keys import DEFAULT_PREFIX
from ..routing import MAX_SHARDS

__all__ = ["ENV_VARS", "RelaySettings"]

ENV_VARS = {
    "redis_url": "CENTRIFUGO_ASYNC_REDIS_URL",
    "api_url": "CENTRIFUGO_API_URL",
    "api_key": "CENTRIFUGO_API_KEY",
    "redis_cluster": "CENTRIFUGO_ASYNC_REDIS_CLUSTER",
}
"""Settings that may come from the environment, and the variable for each."""


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
        return self.lease_ttl / 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Settings from ``ENV_VARS``, with explicit ``overrides`` taking precedence."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {
            name: environ[var] for name, var in ENV_VARS.items() if environ.get(var)
        }
        if "redis_cluster" in values:
            values["redis_cluster"] = values["redis_cluster"].lower() in ("1", "true", "yes")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
