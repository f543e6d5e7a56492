"""Ordered, versioned asynchronous publishing to Centrifugo.

Publish from a backend with ``Publisher`` / ``AsyncPublisher``; run the relay with
``centrifugo-async relay`` (or ``centrifugo_async.relay.serve``). ``__version__`` is
the installed distribution's version.
"""

from ._version import __version__
from .exceptions import (
    CentrifugoAsyncError,
    CentrifugoAuthError,
    ConfigError,
    EnvelopeDecodeError,
    InvalidMessage,
    InvalidSetting,
    NotInTransaction,
    OutboxError,
    OutboxSchemaError,
    PartialPublish,
    PayloadTooLarge,
    QueueUnavailable,
    RelayFatalError,
    ReshardRefused,
    SubscriptionLost,
    TopologyMismatch,
    TopologyNotRecorded,
)
from .protocol import (
    DEFAULT_PREFIX,
    ENVELOPE_VERSION,
    MAX_DEPTH,
    MAX_OBJECT_VERSION,
    DeadLetter,
    Envelope,
    Keyspace,
    decode_envelope,
    default_idempotency_key,
    encode_envelope,
    shard_for,
)
from .publisher import AsyncPublisher, Message, Publisher

__all__ = [
    "DEFAULT_PREFIX",
    "ENVELOPE_VERSION",
    "MAX_DEPTH",
    "MAX_OBJECT_VERSION",
    "AsyncPublisher",
    "CentrifugoAsyncError",
    "CentrifugoAuthError",
    "ConfigError",
    "DeadLetter",
    "Envelope",
    "EnvelopeDecodeError",
    "InvalidMessage",
    "InvalidSetting",
    "Keyspace",
    "Message",
    "NotInTransaction",
    "OutboxError",
    "OutboxSchemaError",
    "PartialPublish",
    "PayloadTooLarge",
    "Publisher",
    "QueueUnavailable",
    "RelayFatalError",
    "ReshardRefused",
    "SubscriptionLost",
    "TopologyMismatch",
    "TopologyNotRecorded",
    "__version__",
    "decode_envelope",
    "default_idempotency_key",
    "encode_envelope",
    "shard_for",
]
