"""``LookAhead``: what a shard worker has read of its queue beyond its claims.

A channel in ``latest`` mode gets only the newest version of each key the relay
has in hand. With a batch of 500 out of a backlog of a million updates over a
thousand keys, the batch alone holds few repeats; looking further into the
queue finds, for most queued envelopes, a newer version of their key that will
be delivered later anyway, so they need not be sent: a catch-up after an
outage sends about one publication per key.

The worker reads the queue ahead of its claims (``LRANGE``, moving nothing) and
keeps what it read while it holds the lease: only the lease holder removes
entries from the head of its queue (publishers only append), so the entries
read stay in the queue, in order, until this worker takes them. Two things use
what it read:

- ``newest``: the newest version per field, so that the claimed batch drops
  what a queued newer version supersedes (``freshness.supersede``);
- ``superseded_head``: how many entries at the head of the queue are all
  superseded that way, so that the worker drops them without claiming them
  (``protocol.scripts.DROP_SUPERSEDED``, which checks the head is still the
  entry read first: a FIFO that only loses its head and grows at its tail then
  holds exactly the entries read, in order).

``claimed(n)`` and ``dropped(n)`` follow what left the head; anything that may
have moved the head without the worker knowing (a lost reply, another lease)
makes it ``forget`` all it read, which is always safe: it reads again.

An entry that may expire before it is delivered (a ``ttl_ms``, or a
late-delivery policy for its channel) stands in for no other: it could expire
instead of delivering the newer version.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import NamedTuple

import attrs

from ..connection import AsyncRedisClient
from .freshness import decode_key_version, version_field

__all__ = ["READ_AT_ONCE", "HeadRun", "LookAhead"]

READ_AT_ONCE = 2000
"""Most entries one ``newest`` call reads, so one round never stalls on a huge reply."""


class _Entry(NamedTuple):
    """One queued entry as read (a tuple: a million of them go by in a catch-up)."""

    field: str | None
    """Its field when it is on a ``latest`` channel."""
    version: int
    digest: bytes
    """SHA-1 of its bytes, to check it is still the head before dropping anything."""


@attrs.frozen
class HeadRun:
    """The first ``count`` queued entries, each superseded by a newer one behind it."""

    count: int
    head_sha1: str
    """SHA-1 (hex) of the first of them, as the drop script checks it."""


Classify = Callable[[str, int | None], tuple[bool, bool]]
"""(channel, ttl_ms) -> (on a latest channel, may stand in for older versions)."""


class LookAhead:
    """What one shard worker has read of its queue beyond its claims, under one lease."""

    def __init__(self, limit: int, classify: Classify) -> None:
        """``limit``: most entries read ahead of the head."""
        self.limit = limit
        self._classify = classify
        self._lease: str | None = None
        self._entries: deque[_Entry] = deque()
        """The entries read, from the head of the queue on."""
        self._newest: dict[str, int] = {}

    def forget(self) -> None:
        """Drop everything read: the next ``newest`` reads from the head again."""
        self._entries.clear()
        self._newest.clear()

    def claimed(self, lease: str, count: int) -> None:
        """``count`` entries just moved from the head of the queue under ``lease``."""
        if lease != self._lease:
            self.forget()
            self._lease = lease
            return
        self.dropped(count)

    def dropped(self, count: int) -> None:
        """``count`` entries left the head of the queue (claimed, or dropped as superseded)."""
        entries = self._entries
        if count >= len(entries):
            self.forget()
            return
        for _ in range(count):
            entries.popleft()

    async def newest(self, client: AsyncRedisClient, queue: str) -> Mapping[str, int]:
        """The newest version per field among the next ``limit`` queued entries."""
        if len(self._newest) > 2 * self.limit:
            self.forget()
        start = len(self._entries)
        wanted = min(READ_AT_ONCE, self.limit - start)
        if wanted > 0:
            entries = await client.lrange(queue, start, start + wanted - 1)
            newest, append, sha1 = self._newest, self._entries.append, hashlib.sha1
            kinds: dict[tuple[str, int | None], tuple[bool, bool]] = {}
            for raw in entries:
                data = raw if isinstance(raw, bytes) else raw.encode()
                field, version = None, 0
                entry = decode_key_version(data)
                if entry is not None:
                    kind = (entry.channel, entry.ttl_ms)
                    latest, stands_in = kinds.get(kind) or kinds.setdefault(
                        kind, self._classify(*kind)
                    )
                    if latest:
                        field, version = version_field(entry.channel, entry.key), entry.version
                        if stands_in and version > newest.get(field, -1):
                            newest[field] = version
                append(_Entry(field, version, sha1(data).digest()))
        return self._newest

    def superseded_head(self, lease: str) -> HeadRun | None:
        """The longest run at the head of the queue of entries a newer one supersedes
        (None if there is none, or what was read was read under another lease)."""
        if lease != self._lease:
            return None
        newest = self._newest
        count = 0
        for entry in self._entries:
            if entry.field is None or newest.get(entry.field, -1) <= entry.version:
                break
            count += 1
        if not count:
            return None
        return HeadRun(count, self._entries[0].digest.hex())
