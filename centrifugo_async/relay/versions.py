"""``VersionMemory``: a shard's remembered versions, as its lease holder reads them.

Monotonic delivery needs, for each claimed (channel, key), the last version the
relay delivered: the ``versions`` hashes of the shard (``protocol.keys``), which
only the ACK script writes, fenced by the lease. So while a worker holds a
lease, nothing but its own acks changes them, and what it read or wrote stays
true until the lease changes hands: the worker keeps it in a small cache and
reads Redis (``KNOWN_VERSIONS``, one call per batch) only for the fields it has
not seen under this lease. Hot keys then cost no read at all.

The cache is forgotten on a new lease and whenever a Redis call about the
memory failed (an ack whose reply was lost may have written versions the cache
does not know). Remembering more than Redis (after the ACK script rotated a
generation out) only drops more stale versions; forgetting is always safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis.exceptions

from ..connection import AsyncRedisClient
from ..protocol.keys import ShardKeys
from ..protocol.scripts import KNOWN_VERSIONS

__all__ = ["CACHE_LIMIT", "VersionMemory"]

CACHE_LIMIT = 4096
"""Most fields one worker keeps in its cache; past that it starts over (reading Redis again)."""


class VersionMemory:
    """The last delivered version per (channel, key) field of one shard."""

    def __init__(self, client: AsyncRedisClient, keys: ShardKeys) -> None:
        self._read = client.register_script(KNOWN_VERSIONS.source)
        self._keys = [keys.versions, keys.versions_old]
        self._lease: str | None = None
        self._cache: dict[str, int] = {}
        """field -> last delivered version, -1 when Redis remembers none."""

    async def known(self, lease: str, fields: Iterable[str]) -> dict[str, int]:
        """The remembered version of each of ``fields`` (those remembered: others are absent)."""
        if lease != self._lease:
            self.forget()
            self._lease = lease
        cache = self._cache
        wanted = list(dict.fromkeys(fields))
        missing = [f for f in wanted if f not in cache]
        if len(cache) + len(missing) > CACHE_LIMIT:
            cache.clear()
            missing = wanted
        if missing:
            try:
                reply = await self._read(keys=self._keys, args=missing)
            except redis.exceptions.RedisError:
                self.forget()
                raise
            for field, version in zip(missing, reply, strict=True):
                cache[field] = -1 if version is None else int(version)
        return {f: v for f in wanted if (v := cache[f]) >= 0}

    def recorded(self, lease: str, versions: Mapping[str, int]) -> None:
        """The ACK script under ``lease`` just wrote ``versions``."""
        if lease == self._lease:
            self._cache.update(versions)

    def forget(self) -> None:
        """Read everything from Redis again next time."""
        self._cache.clear()
        self._lease = None
