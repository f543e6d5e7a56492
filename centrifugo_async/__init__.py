"""Ordered, versioned asynchronous publishing to Centrifugo.

Publish from a backend with ``Publisher`` / ``AsyncPublisher``; run the relay with
``centrifugo-async relay`` (or ``centrifugo_async.relay.serve``).
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
from .exceptions import (
    CentrifugoAsyncError,
    CentrifugoAuthError,
    ConfigError,
    EnvelopeDecodeError,
    InvalidMessage,
    PayloadTooLarge,
    QueueUnavailable,
    RelayFatalError,
    TopologyMismatch,
)
from .keys import DEFAULT_PREFIX, Keyspace
from .message import Message
from .publisher import AsyncPublisher, Publisher
from .routing import shard_for

__all__ = [
    "DEFAULT_PREFIX",
    "ENVELOPE_VERSION",
    "MAX_OBJECT_VERSION",
    "AsyncPublisher",
    "CentrifugoAsyncError",
    "CentrifugoAuthError",
    "ConfigError",
    "DeadLetter",
    "Envelope",
    "EnvelopeDecodeError",
    "InvalidMessage",
    "Keyspace",
    "Message",
    "PayloadTooLarge",
    "Publisher",
    "QueueUnavailable",
    "RelayFatalError",
    "TopologyMismatch",
    "decode_envelope",
    "default_idempotency_key",
    "encode_envelope",
    "shard_for",
]
