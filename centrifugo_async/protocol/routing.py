"""Key -> shard routing, identical in every language.

The shard of a key is ``fnv1a_32(utf8(key)) % shards``. FNV-1a was chosen because
it is a dozen lines in any language, needs only 32-bit unsigned arithmetic
(``Math.imul`` in JavaScript) and spreads short keys well. Python's ``hash()`` is
salted per process and must never be used for this.
"""

from __future__ import annotations

import functools

__all__ = ["DEFAULT_SHARDS", "MAX_SHARDS", "fnv1a_32", "shard_for"]

MAX_SHARDS = 4096

DEFAULT_SHARDS = 16
"""The shard count a publisher records when it is given none and Redis records none."""

_FNV_OFFSET_BASIS = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data``."""
    h = _FNV_OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


@functools.lru_cache(maxsize=16384)
def shard_for(key: str, shards: int) -> int:
    """The shard index (``0 <= index < shards``) that carries every message of ``key``.

    Cached: the pure-Python hash costs about a microsecond per key, a large share
    of ``publish_many``'s time per envelope, and hot keys repeat.
    """
    return fnv1a_32(key.encode("utf-8")) % shards
