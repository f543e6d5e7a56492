"""``ForwarderSettings``: what one outbox forwarder needs. Durations are in seconds.

The class body is the forwarder's settings table, as ``RelaySettings`` is the
relay's: a field that operators may set carries a ``Flag`` with its help text,
environment variable and numeric limits, and ``FLAGS`` lists those rows.
``centrifugo-async outbox`` derives its options from them (name, default, help,
environment variable, range), and the same limits validate the settings built
from Python, so a value is declared once and checked the same way everywhere.

The Redis URL, cluster switch and prefix carry no ``Flag``: the command line
shares them with the relay and the operator commands
(``CENTRIFUGO_ASYNC_REDIS_URL``, ...), as they name the same queues.
"""

from __future__ import annotations

import math
import os
import re
import socket
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from ..connection import DEFAULT_TIMEOUT
from ..logs import MASK, mask_url
from ..protocol.keys import DEFAULT_PREFIX
from ..protocol.routing import MAX_SHARDS
from .table import DEFAULT_TABLE

__all__ = ["DSN_ENV", "ENV_PREFIX", "FLAGS", "Flag", "FlagRow", "ForwarderSettings"]

ENV_PREFIX = "CENTRIFUGO_ASYNC_OUTBOX_"
"""A forwarder setting's environment variable is this plus its name in capitals, unless
its ``Flag`` names another."""

DSN_ENV = ENV_PREFIX + "DSN"
"""The environment variable the CLI reads the PostgreSQL DSN from."""

_FLAG = "centrifugo_async.flag"


@attrs.frozen
class Flag:
    """How one ``ForwarderSettings`` field is offered on the command line.

    ``above`` is an exclusive lower limit, ``low`` and ``high`` inclusive ones;
    None (an absent optional value) is always allowed.
    """

    help: str
    env: str = ""
    above: float | None = None
    low: float | None = None
    high: float | None = None
    shown_default: str = ""
    """How ``--help`` shows a default computed per process."""

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (completing "<setting> ..."), or None if it is fine."""
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        too_low = (self.above is not None and value <= self.above) or (
            self.low is not None and value < self.low
        )
        too_high = self.high is not None and value > self.high
        if not (too_low or too_high):
            return None
        if self.above is not None:
            limits = f"> {self.above}" + (f" and <= {self.high}" if self.high is not None else "")
        elif self.low is not None and self.high is not None:
            limits = f"{self.low}..{self.high}"
        else:
            limits = f">= {self.low}" if self.low is not None else f"<= {self.high}"
        return f"must be {limits}, got {value!r}"

    def describe(self) -> str:
        """The allowed values, like click's ranges: ``x>0``, ``1<=x<=4096``; empty: any."""
        if self.above is not None:
            lower, one_sided = f"{self.above}<", f"x>{self.above}"
        elif self.low is not None:
            lower, one_sided = f"{self.low}<=", f"x>={self.low}"
        else:
            lower, one_sided = "", ""
        return one_sided if self.high is None else f"{lower}x<={self.high}"


@attrs.frozen
class FlagRow:
    """A ``Flag`` with its field's name, type and default (None when computed per process)."""

    name: str
    type: object
    default: Any
    env: str
    flag: Flag


def _validate(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = attribute.metadata[_FLAG].problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name} {problem}")


def _setting(
    default: object = attrs.NOTHING,
    *,
    help: str,
    factory: Callable[[], object] | None = None,
    env: str = "",
    above: float | None = None,
    low: float | None = None,
    high: float | None = None,
    shown_default: str = "",
) -> Any:
    """A ``ForwarderSettings`` field that is also a row of the forwarder's settings table."""
    flag = Flag(help, env, above, low, high, shown_default)
    return attrs.field(
        default=default,
        factory=factory,
        validator=_validate,
        metadata={_FLAG: flag},
        repr=_masked_dsn if env == DSN_ENV else True,
    )


_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _masked_dsn(dsn: object) -> str:
    """A DSN as ``repr`` shows it: the password of a URL or a ``password=`` pair masked."""
    text = str(dsn)
    text = mask_url(text) if "://" in text else _DSN_PASSWORD.sub(rf"\g<1>{MASK}", text)
    return repr(text)


def _default_forwarder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@attrs.frozen(kw_only=True)
class ForwarderSettings:
    """One forwarder: where the rows are, where they go, and its timers."""

    dsn: str = _setting(
        help="PostgreSQL connection string (libpq DSN or URL) of the database holding the outbox.",
        env=DSN_ENV,
    )
    redis_url: str = attrs.field(repr=lambda url: repr(mask_url(url)))
    redis_cluster: bool = False
    prefix: str = DEFAULT_PREFIX
    table: str = _setting(
        DEFAULT_TABLE,
        help="The outbox table, optionally schema-qualified (app.centrifugo_outbox).",
    )
    shards: int | None = _setting(
        None,
        env="CENTRIFUGO_ASYNC_SHARDS",
        low=1,
        high=MAX_SHARDS,
        shown_default="as recorded, else 16",
        help="Shard count to record in Redis if none is recorded (a recorded count wins).",
    )
    batch: int = _setting(500, low=1, high=10_000, help="Most rows taken from one lane per sweep.")
    poll_interval: float = _setting(
        1.0,
        low=0.01,
        high=3600,
        help="Seconds between sweeps when no NOTIFY arrives (the fallback for lost wake-ups).",
    )
    claim_interval: float = _setting(
        2.0,
        low=0.05,
        high=3600,
        help="Seconds between looks for free lanes (a stopped forwarder's, new ones).",
    )
    retry_initial: float = _setting(
        0.1,
        low=0.001,
        high=60,
        help="Seconds before the first retry after an error; the delay doubles up to retry_max.",
    )
    retry_max: float = _setting(
        5.0, low=0.01, high=300, help="Longest delay between retries, in seconds."
    )
    redis_timeout: float = _setting(
        DEFAULT_TIMEOUT,
        above=0,
        high=300,
        help="Seconds to connect to Redis and to wait for each reply before the rows wait and "
        "the call is retried (a hung Redis never blocks the forwarder).",
    )
    stuck_after: float = _setting(
        60.0,
        above=0,
        help="Seconds an owned lane's oldest row may wait before /health reports the lane.",
    )
    sample_interval: float = _setting(
        5.0, above=0, help="Seconds between samples of the backlog for /metrics and /health."
    )
    metrics_host: str = _setting("127.0.0.1", help="Bind address of /metrics and /health.")
    metrics_port: int = _setting(
        9109,
        low=0,
        high=65535,
        help="Port of /metrics and /health; 0 disables them (the relay's default is 9108).",
    )
    forwarder_id: str = _setting(
        factory=_default_forwarder_id,
        shown_default="<hostname>:<pid>:<random>",
        help="Name in logs and in outbox stats; unique per live forwarder.",
    )


def _rows() -> tuple[FlagRow, ...]:
    attrs.resolve_types(ForwarderSettings)
    rows = []
    for field in attrs.fields(ForwarderSettings):
        flag: Flag | None = field.metadata.get(_FLAG)
        if flag is None:
            continue
        # attrs.Factory is a class at run time; its stubs declare a function.
        computed = isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
        default = None if computed or field.default is attrs.NOTHING else field.default
        env = flag.env or ENV_PREFIX + field.name.upper()
        rows.append(FlagRow(field.name, field.type, default, env, flag))
    return tuple(rows)


FLAGS: tuple[FlagRow, ...] = _rows()
"""The forwarder settings an operator may set, in the order of the class body."""
