"""Every error the library raises, in one tree.

    CentrifugoAsyncError
    ├── InvalidMessage              bad input to publish(); nothing was written
    │   └── PayloadTooLarge         the encoded envelope exceeds the configured limit
    ├── EnvelopeDecodeError         bytes that are not a valid envelope (relay, clients)
    ├── TopologyMismatch            shard count differs from the one recorded in Redis
    ├── TopologyNotRecorded         no shard count is recorded for the prefix yet
    ├── ReshardRefused              a reshard could not drain its shards in time; nothing changed
    ├── QueueUnavailable            Redis could not be reached or failed the command
    ├── OutboxError                 the transactional outbox (PostgreSQL) was misused
    │   ├── NotInTransaction        publish() outside a transaction: the row would commit alone
    │   └── OutboxSchemaError       the outbox table is missing or of an unknown schema version
    ├── ConfigError                 bad relay configuration (names the key and its source)
    │   └── InvalidSetting          one setting's value is not allowed (``field`` names it)
    └── RelayFatalError             the relay cannot go on and must stop (exit non-zero)
    │   └── CentrifugoAuthError     Centrifugo refused the API key (HTTP 401/403)
    └── SubscriptionLost            the server ended a synced subscription for good (subscribers)

``InvalidMessage``, ``EnvelopeDecodeError`` and ``ConfigError`` are also ``ValueError`` so callers
that validate input generically still catch them.
"""

from __future__ import annotations

__all__ = [
    "CentrifugoAsyncError",
    "CentrifugoAuthError",
    "ConfigError",
    "EnvelopeDecodeError",
    "InvalidMessage",
    "InvalidSetting",
    "NotInTransaction",
    "OutboxError",
    "OutboxSchemaError",
    "PayloadTooLarge",
    "QueueUnavailable",
    "RelayFatalError",
    "ReshardRefused",
    "SubscriptionLost",
    "TopologyMismatch",
    "TopologyNotRecorded",
]


class CentrifugoAsyncError(Exception):
    """Base class of every error raised by centrifugo_async."""


class InvalidMessage(CentrifugoAsyncError, ValueError):
    """A message given to ``publish`` is invalid; nothing was written to Redis."""


class PayloadTooLarge(InvalidMessage):
    """The encoded envelope is larger than the publisher's ``max_payload_bytes``."""


class EnvelopeDecodeError(CentrifugoAsyncError, ValueError):
    """Bytes that do not decode to a valid envelope of a supported major version."""


class TopologyMismatch(CentrifugoAsyncError):
    """The configured shard count differs from the one recorded in Redis.

    Routing a key with a different shard count would send it to another list and
    break its order, so publishers and relays refuse to start instead.
    """


class TopologyNotRecorded(CentrifugoAsyncError):
    """No shard count is recorded for the prefix: no publisher or relay has used it yet.

    Operator tools raise it rather than guess a count; usually ``--redis-url`` or
    ``--prefix`` points somewhere else.
    """


class ReshardRefused(CentrifugoAsyncError):
    """A reshard gave up: some shards still held messages when its timeout ran out.

    Every seal it had placed was undone, so the recorded count is unchanged.
    """


class QueueUnavailable(CentrifugoAsyncError):
    """Redis could not be reached, timed out or failed a command.

    Publishing is a single atomic script call, so when this is raised the message
    was either fully enqueued or not at all; with a timeout the outcome is unknown.
    """


class OutboxError(CentrifugoAsyncError):
    """The transactional outbox cannot do what was asked (see its subclasses)."""


class NotInTransaction(OutboxError):
    """``outbox.publish`` was called on a connection that is not in a transaction.

    In autocommit mode outside ``with conn.transaction()`` the outbox row would
    commit on its own, apart from the change it announces: exactly the window
    the outbox exists to close.
    """


class OutboxSchemaError(OutboxError):
    """The outbox table does not exist, or its schema version is newer than this release."""


class ConfigError(CentrifugoAsyncError, ValueError):
    """The relay configuration is invalid; the message names the key and its source."""


class InvalidSetting(ConfigError):
    """A setting's value is not allowed; ``field`` names the setting.

    Carrying the name lets the loader say which source gave the value, where
    matching the message text would confuse ``max_batch`` with ``max_batch_bytes``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        """The name of the setting, as in ``RelaySettings`` and the TOML file."""


class RelayFatalError(CentrifugoAsyncError):
    """A condition the relay cannot retry its way out of (bad configuration)."""


class CentrifugoAuthError(RelayFatalError):
    """Centrifugo answered HTTP 401/403: the API key is missing or wrong."""


class SubscriptionLost(CentrifugoAsyncError):
    """The SDK unsubscribed for good (server refused or ended the subscription).

    Raised by ``SyncedSubscription.start()`` when it happens before the first sync,
    reported to ``on_error`` (context ``"unsubscribed"``) when it happens later.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"subscription ended: {reason} (code {code})")
        self.code = code
        """The unsubscribe code centrifuge-python reported."""
        self.reason = reason
        """The unsubscribe reason centrifuge-python reported."""
