"""The batch window: what one answer from Centrifugo means for a shard's pending messages.

A shard worker sends the first ``window`` of its pending messages as one batch,
reads the ``BatchResult`` and asks ``settle_window`` what became of each message
and what to send next. The decision is a pure function of (pending, window,
result), so every rule is tested on its own (``tests/unit/test_window.py``)::

    RETRY ...................... nothing is known to be accepted: same pending, same
                                 window, resend after a backoff
    REFUSED, window > 1 ........ one of the commands spoiled the body: from now on
                                 send one command at a time (window 1), at once
    REFUSED, window 1 .......... that command is the culprit: dead-letter it
                                 ("refused") and go on with the rest
    REPLIES .................... accepted: delivered; code 100: resent after a
                                 backoff; any other code: dead-lettered ("rejected")

Order after a code 100: with ``parallel: false`` Centrifugo runs the commands in
order but does not stop at one that fails, so in ``[a, b, c]`` answered
``[ok, 100, ok]`` both ``a`` and ``c`` are accepted. ``b`` goes to the head of
the pending messages and is resent first, yet it reaches Centrifugo after ``c``;
when ``b`` and ``c`` share a key, subscribers see the newer version first and
skip ``b`` as stale. (On monotonic channels the worker does not resend ``b``
then: ``freshness.outdated``.) The window then covers every remaining message
again, unless it was narrowed to 1 to isolate a refused body: it stays 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import attrs

from .api import BatchResult, ReplyStatus, RetryCause, Verdict

__all__ = ["Retry", "WindowOutcome", "settle_window"]

T = TypeVar("T")


@attrs.frozen
class Retry:
    """Messages that were sent and go out again, after a backoff."""

    count: int
    cause: RetryCause
    reason: str


@attrs.frozen
class WindowOutcome(Generic[T]):
    """What one answer settled, and what to send next."""

    pending: tuple[T, ...]
    """Still to send, in sending order."""
    window: int
    """How many of ``pending`` the next batch holds."""
    delivered: tuple[T, ...] = ()
    """Accepted by Centrifugo."""
    rejected: tuple[tuple[T, ReplyStatus], ...] = ()
    """Answered with a permanent error code: dead-letter with reason "rejected"."""
    refused: T | None = None
    """Its body alone was refused (HTTP 400/413): dead-letter with reason "refused"."""
    retry: Retry | None = None
    """Set when some sent messages go out again: the worker backs off first."""
    isolating: bool = False
    """The window was just narrowed to 1 to find the command that spoiled the body."""


def settle_window(pending: Sequence[T], window: int, result: BatchResult) -> WindowOutcome[T]:
    """Settle ``result``, Centrifugo's answer to the batch ``pending[:window]``."""
    head = tuple(pending[:window])
    rest = tuple(pending[window:])
    if result.verdict is Verdict.RETRY:
        assert result.cause is not None  # BatchResult requires one with Verdict.RETRY
        return WindowOutcome(
            (*head, *rest), window, retry=Retry(len(head), result.cause, result.reason)
        )
    if result.verdict is Verdict.REFUSED:
        if window > 1:
            return WindowOutcome((*head, *rest), 1, isolating=True)
        return WindowOutcome((*head[1:], *rest), 1, refused=head[0])
    delivered: list[T] = []
    retry: list[T] = []
    rejected: list[tuple[T, ReplyStatus]] = []
    retry_reason = ""
    for item, reply in zip(head, result.replies, strict=True):
        if reply.accepted:
            delivered.append(item)
        elif reply.temporary:
            retry.append(item)
            retry_reason = f"error {reply.code}: {reply.message}"
        else:
            rejected.append((item, reply))
    remaining = (*retry, *rest)
    return WindowOutcome(
        remaining,
        len(remaining) if window > 1 else 1,
        delivered=tuple(delivered),
        rejected=tuple(rejected),
        retry=Retry(len(retry), RetryCause.CODE_100, retry_reason) if retry else None,
    )
