"""Every error the library raises, in one tree.

    CentrifugoAsyncError
    ├── InvalidMessage              bad input to publish(); nothing was written
    │   └── PayloadTooLarge         the encoded envelope exceeds the configured limit
    ├── EnvelopeDecodeError         bytes that are not a valid envelope (relay, clients)
    ├── TopologyMismatch            shard count differs from the one recorded in Redis
    ├── TopologyNotRecorded         no shard count is recorded for the prefix yet
    ├── ReshardRefused              a reshard could not drain its shards in time; nothing changed
    ├── QueueUnavailable            Redis could not be reached or failed the command
    │   └── PartialPublish          publish_many: part of the batch enqueued, the rest not
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

from collections.abc import Sequence
from typing import Any

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
    "PartialPublish",
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

    def __init__(self, message: str, *, reason: str = "invalid_envelope") -> None:
        super().__init__(message)
        self.reason = reason
        """Which rule was broken, as the relay's dead-letter ``reason``:
        ``invalid_envelope`` (not JSON, or not an envelope), or one of the JSON
        profile's ``invalid_unicode``, ``too_deep``, ``number_out_of_range``."""


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
    was either fully enqueued or not at all; with a timeout or a lost connection
    the outcome is unknown. For ``publish_many`` this class itself means nothing
    of the batch is known to be enqueued (``PartialPublish`` says when some is).
    """


class PartialPublish(QueueUnavailable):
    """``publish_many`` enqueued part of the batch, then Redis failed the rest.

    Each shard's messages go in one script call of a pipeline, and Redis can
    refuse some calls while running others (memory full, a shard sealed by a
    reshard, a connection lost half-way). Retry ``not_enqueued`` alone: retrying
    everything would enqueue ``enqueued`` twice. The cause (``QueueUnavailable``
    or ``TopologyMismatch``) is chained as ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        enqueued: Sequence[Any],
        not_enqueued: Sequence[Any],
        unknown: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.enqueued = list(enqueued)
        """The ``Envelope`` objects written, with their ``seq`` (as ``publish_many`` returns)."""
        self.not_enqueued = list(not_enqueued)
        """The ``Message`` objects Redis refused, in the order given: retry these."""
        self.unknown = list(unknown)
        """``Message`` objects whose outcome is unknown (the connection was lost before
        Redis answered). Retrying them is safe: a copy that went in twice is
        delivered once (same idempotency key) and version gates drop repeats."""


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
