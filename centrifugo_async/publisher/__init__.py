"""The publisher role: validate, encode and enqueue envelopes into sharded Redis lists.

``Publisher`` and ``AsyncPublisher`` are twins; everything that is not I/O
(validation, encoding, routing, grouping by shard) lives in ``_plan`` and is
shared by both.
"""

from ._publishers import DEFAULT_MAX_PAYLOAD_BYTES, AsyncPublisher, Publisher
from .message import Message

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "AsyncPublisher", "Message", "Publisher"]
