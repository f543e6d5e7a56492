"""The batch-window decision of the shard worker (``relay.window.settle_window``), on its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from centrifugo_async.relay.api import BatchResult, ReplyStatus, RetryCause, Verdict
from centrifugo_async.relay.window import Retry, WindowOutcome, settle_window

OK = ReplyStatus()
INTERNAL = ReplyStatus(100, "internal error")
UNKNOWN_CHANNEL = ReplyStatus(102, "unknown channel")


def replies(*statuses: ReplyStatus) -> BatchResult:
    return BatchResult(Verdict.REPLIES, statuses)


REFUSED = BatchResult(Verdict.REFUSED, reason="HTTP 400: Bad Request")
UNAVAILABLE = BatchResult(Verdict.RETRY, reason="HTTP 503: busy", cause=RetryCause.HTTP_5XX)


def test_all_accepted_settles_the_whole_batch() -> None:
    outcome = settle_window("abc", 3, replies(OK, OK, OK))
    assert outcome == WindowOutcome((), 0, delivered=("a", "b", "c"))


def test_only_the_window_is_settled_and_the_next_window_covers_the_rest() -> None:
    outcome = settle_window("abcde", 2, replies(OK, OK))
    assert outcome == WindowOutcome(("c", "d", "e"), 3, delivered=("a", "b"))


def test_a_retry_verdict_keeps_everything_and_backs_off() -> None:
    outcome = settle_window("abc", 3, UNAVAILABLE)
    assert outcome == WindowOutcome(
        ("a", "b", "c"), 3, retry=Retry(3, RetryCause.HTTP_5XX, "HTTP 503: busy")
    )


def test_a_retry_while_isolating_counts_the_one_command_sent() -> None:
    outcome = settle_window("abc", 1, UNAVAILABLE)
    assert outcome.pending == ("a", "b", "c") and outcome.window == 1
    assert outcome.retry == Retry(1, RetryCause.HTTP_5XX, "HTTP 503: busy")


def test_a_refused_batch_isolates_to_window_1_without_waiting() -> None:
    outcome = settle_window("abc", 3, REFUSED)
    assert outcome == WindowOutcome(("a", "b", "c"), 1, isolating=True)


def test_a_refused_single_command_is_the_culprit() -> None:
    outcome = settle_window("abc", 1, REFUSED)
    assert outcome == WindowOutcome(("b", "c"), 1, refused="a")


def test_other_codes_are_rejected_and_the_rest_delivered() -> None:
    outcome = settle_window("abc", 3, replies(OK, UNKNOWN_CHANNEL, OK))
    assert outcome == WindowOutcome((), 0, delivered=("a", "c"), rejected=(("b", UNKNOWN_CHANNEL),))


def test_code_100_in_the_middle_goes_to_the_head_of_the_pending_messages() -> None:
    """Pinned order: ``c`` was accepted before ``b`` is sent again (see window.py)."""
    outcome = settle_window("abcde", 3, replies(OK, INTERNAL, OK))
    assert outcome == WindowOutcome(
        ("b", "d", "e"),
        3,
        delivered=("a", "c"),
        retry=Retry(1, RetryCause.CODE_100, "error 100: internal error"),
    )


def test_several_code_100_keep_their_order_and_report_the_last_message() -> None:
    last = ReplyStatus(100, "still internal")
    outcome = settle_window("abcd", 4, replies(INTERNAL, OK, last, UNKNOWN_CHANNEL))
    assert outcome.pending == ("a", "c")
    assert outcome.window == 2
    assert outcome.delivered == ("b",)
    assert outcome.rejected == (("d", UNKNOWN_CHANNEL),)
    assert outcome.retry == Retry(2, RetryCause.CODE_100, "error 100: still internal")


def test_once_isolating_the_window_stays_1() -> None:
    outcome = settle_window("abc", 1, replies(OK))
    assert outcome == WindowOutcome(("b", "c"), 1, delivered=("a",))
    outcome = settle_window("abc", 1, replies(INTERNAL))
    assert outcome.pending == ("a", "b", "c") and outcome.window == 1


def test_replies_must_match_the_window() -> None:
    with pytest.raises(ValueError):
        settle_window("abc", 3, replies(OK, OK))


Server = Callable[[Sequence[str]], BatchResult]


def drive(messages: str, server: Server, limit: int = 50) -> tuple[list[str], list[str], int]:
    """Run the worker's loop over ``settle_window``: (accepted order, dead letters, requests)."""
    pending: Sequence[str] = tuple(messages)
    window = len(pending)
    accepted: list[str] = []
    dead: list[str] = []
    requests = 0
    while pending:
        assert requests < limit, "the loop does not converge"
        requests += 1
        outcome = settle_window(pending, window, server(pending[:window]))
        accepted += outcome.delivered
        dead += [item for item, _ in outcome.rejected]
        if outcome.refused is not None:
            dead.append(outcome.refused)
        pending, window = outcome.pending, outcome.window
    return accepted, dead, requests


def test_isolation_dead_letters_only_the_culprit_and_keeps_the_order() -> None:
    def refuse_d(batch: Sequence[str]) -> BatchResult:
        return REFUSED if "d" in batch else replies(*[OK] * len(batch))

    accepted, dead, requests = drive("abcdefg", refuse_d)
    assert (accepted, dead) == (list("abcefg"), ["d"])
    assert requests == 1 + 7  # the whole batch, then one request per message


def test_code_100_once_in_the_middle_delivers_it_after_its_successors() -> None:
    answers = iter([replies(OK, INTERNAL, OK, OK)])

    def once(batch: Sequence[str]) -> BatchResult:
        return next(answers, replies(*[OK] * len(batch)))

    accepted, dead, requests = drive("abcd", once)
    assert (accepted, dead, requests) == (list("acdb"), [], 2)
