"""``Message``: what an application asks to publish, validated before any I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import attrs

from ..exceptions import InvalidMessage
from ..protocol import ijson
from ..protocol.envelope import MAX_OBJECT_VERSION

__all__ = ["Message"]


def _non_empty_str(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"`{name}` must be a non-empty string, got {value!r}")
    _utf8(f"`{name}`", value)


def _utf8(name: str, value: str) -> None:
    """Refuse a string UTF-8 cannot carry (a lone surrogate), naming where it is."""
    problem = ijson.text_problem(name, value)
    if problem is not None:
        raise InvalidMessage(str(problem))


@attrs.frozen
class Message:
    """One update (or delete) of one object, as given to ``publish`` / ``publish_many``.

    Validation happens here, at construction, so a batch with one bad message is
    refused before any of it reaches Redis. ``data`` is checked when it is
    encoded (``publish`` / ``publish_many``): it must be JSON every subscriber
    can decode (``protocol.ijson``: no NaN or infinity, no lone surrogate,
    nesting within the limit, numbers within the range of a double).
    ``Message.delete(...)`` builds a delete: ``deleted=True`` and no data.
    """

    channel: str
    data: Any
    key: str
    version: int
    tags: Mapping[str, str] | None = None
    idempotency_key: str | None = None
    ttl_ms: int | None = None
    deleted: bool = False

    @classmethod
    def delete(
        cls,
        channel: str,
        *,
        key: str,
        version: int,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        ttl_ms: int | None = None,
    ) -> Self:
        """A delete of object ``key`` as of ``version``.

        ``version`` must be newer than the object's last update (bump it on delete,
        as for any change): one object version is one message, and subscribers
        drop a delete at a version they already hold as a duplicate.
        """
        return cls(channel, None, key, version, tags, idempotency_key, ttl_ms, deleted=True)

    def __attrs_post_init__(self) -> None:
        _non_empty_str("channel", self.channel)
        _non_empty_str("key", self.key)
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise InvalidMessage(f"`version` must be an integer, got {self.version!r}")
        if not 0 <= self.version <= MAX_OBJECT_VERSION:
            raise InvalidMessage(
                f"`version` {self.version} is out of range: it must be 0..2**53-1 "
                "(the largest integer JavaScript represents exactly)"
            )
        if self.tags is not None:
            if not isinstance(self.tags, Mapping):
                raise InvalidMessage(f"`tags` must be a mapping of str to str, got {self.tags!r}")
            for tag, value in self.tags.items():
                if not isinstance(tag, str) or not isinstance(value, str):
                    raise InvalidMessage(f"`tags` must map str to str, got {tag!r}: {value!r}")
                _utf8("a name in `tags`", tag)
                _utf8(f"`tags[{tag!r}]`", value)
        if self.idempotency_key is not None:
            _non_empty_str("idempotency_key", self.idempotency_key)
        if self.ttl_ms is not None and (
            isinstance(self.ttl_ms, bool) or not isinstance(self.ttl_ms, int) or self.ttl_ms < 1
        ):
            raise InvalidMessage(f"`ttl_ms` must be a positive integer, got {self.ttl_ms!r}")
        if not isinstance(self.deleted, bool):
            raise InvalidMessage(f"`deleted` must be a bool, got {self.deleted!r}")
        if self.deleted and self.data is not None:
            raise InvalidMessage("a delete carries no data: `data` must be None when `deleted`")
