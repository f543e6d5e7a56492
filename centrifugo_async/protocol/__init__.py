"""The wire contract every role shares: envelope, routing, Redis layout and scripts.

Nothing here knows about publishers, relays or subscribers; they all build on it::

    envelope.py     the JSON object in the lists and in each publication (v1)
    ijson.py        the JSON every entry must be (I-JSON: UTF-8, depth, double range)
    routing.py      key -> shard, identical in every language
    keys.py         every Redis key name, per prefix and shard
    scripts.py      the Lua scripts: every state change of a shard is one of them
    topology.py     the recorded shard count every role checks against
    deadletter.py   the record kept for a message the relay gave up on
    probe.py        what a shard holds right now (stats, health), planned without I/O
"""

from .deadletter import DeadLetter
from .envelope import (
    ENVELOPE_VERSION,
    MAX_OBJECT_VERSION,
    Envelope,
    decode_envelope,
    default_idempotency_key,
    encode_envelope,
)
from .ijson import MAX_DEPTH
from .keys import DEFAULT_PREFIX, Keyspace, ShardKeys
from .routing import DEFAULT_SHARDS, MAX_SHARDS, shard_for

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SHARDS",
    "ENVELOPE_VERSION",
    "MAX_DEPTH",
    "MAX_OBJECT_VERSION",
    "MAX_SHARDS",
    "DeadLetter",
    "Envelope",
    "Keyspace",
    "ShardKeys",
    "decode_envelope",
    "default_idempotency_key",
    "encode_envelope",
    "shard_for",
]
