"""The workload every system gets: the same keys, versions and payload size.

Message ``i`` of a run goes to a key drawn from a seeded random sequence over
``keys`` keys (so every system sees the same key order), and carries that key's
next version. Uniform random keys matter for the order check: with keys taken
round robin, two messages of one key would never be in flight at the same time
and a parallel worker would look ordered when it is not.

The payload (Centrifugo publication ``data`` for the naive workers and the
built-in consumer, the envelope's ``data`` for the relay) is a JSON object of
about ``payload_bytes`` bytes::

    {"key": "key:17", "version": 3, "t": 1700000000123456, "pad": "xxx..."}

``t`` is the enqueue time in microseconds since the Unix epoch, stamped right
before the enqueue call; subscribers subtract it from their receive time. All
processes run on one machine, so they share the clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import attrs
import msgspec

DEFAULT_KEYS = 1000
DEFAULT_PAYLOAD_BYTES = 200
SEED = 20240605

# A typical payload without padding, to size the padding once (not per message).
_TYPICAL = {"key": "key:123", "version": 12, "t": 1_700_000_000_000_000, "pad": ""}

_encoder = msgspec.json.Encoder()


@attrs.frozen
class Workload:
    """Keys, versions and payload size shared by every system of a run."""

    keys: int = DEFAULT_KEYS
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    seed: int = SEED

    @property
    def pad(self) -> str:
        return "x" * max(0, self.payload_bytes - len(_encoder.encode(_TYPICAL)))

    def key_versions(self, count: int) -> Iterator[tuple[str, int]]:
        """``(key, version)`` of messages ``0..count-1``; versions count up per key."""
        rng = random.Random(self.seed)
        versions = [0] * self.keys
        for _ in range(count):
            index = rng.randrange(self.keys)
            versions[index] += 1
            yield f"key:{index}", versions[index]


def payload(key: str, version: int, pad: str) -> dict[str, Any]:
    """The publication data of one message, stamped with the current time."""
    return {"key": key, "version": version, "t": now_us(), "pad": pad}


def now_us() -> int:
    return time.time_ns() // 1000
