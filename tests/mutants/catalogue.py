"""The safety mutants: deliberate bugs in the relay that the test suite must catch.

Each mutant is a few textual patches, ``(file, old text, new text)``, and the
tests expected to fail once they are applied. A patch whose old text is not
found exactly once does not apply, and the check fails loudly instead of
testing nothing: after a refactor of the code under test, update the anchor
text here (``tests/unit/test_mutants.py`` checks every anchor on each run).
"""

from __future__ import annotations

import attrs

__all__ = ["MUTANTS", "Mutant", "Patch"]

WORKER = "centrifugo_async/relay/worker.py"
LEASE = "centrifugo_async/relay/lease.py"
WINDOW = "centrifugo_async/relay/window.py"
SCRIPTS = "centrifugo_async/protocol/scripts.py"
SUPERVISION = "centrifugo_async/relay/supervision.py"

FENCING = "tests/integration/test_fencing.py"
SEND_FENCE = f"{FENCING}::test_a_paused_relay_sends_nothing_after_losing_its_lease"
ACK_FENCE = f"{FENCING}::test_a_stale_ack_cannot_remove_the_batch_the_new_owner_claimed"
SCRIPTS_TESTS = "tests/integration/test_lease_scripts.py"
END_TO_END = "tests/integration/test_end_to_end.py"
KILL = (
    "tests/integration/test_faults.py::test_relay_killed_with_a_batch_in_flight_redelivers_it_first"
)
RETRIES = (
    "tests/integration/test_relay_retries.py"
    "::test_code_100_is_retried_and_other_codes_are_dead_lettered"
)
FRESHNESS = "tests/integration/test_freshness.py"
REPLAY_MONOTONIC = (
    f"{FRESHNESS}::test_a_dead_letter_replay_after_newer_versions_never_moves_a_key_backwards"
)
REDELIVERY_MONOTONIC = (
    f"{FRESHNESS}::test_a_redelivery_past_the_idempotency_window_never_goes_backwards"
)
LEFTOVERS_LATEST = f"{FRESHNESS}::test_leftovers_in_flight_are_sent_latest_wins"
CODE_100_NEWEST = f"{FRESHNESS}::test_after_a_code_100_only_what_is_still_newest_is_retried"
CATCH_UP = f"{FRESHNESS}::test_a_latest_channel_catches_up_with_one_publication_per_key"
UNCERTAIN = f"{FRESHNESS}::test_a_batch_resent_after_an_uncertain_answer_is_sent_latest_wins"
SUPERVISED = "tests/integration/test_supervision.py"
HAND_OVER_DURING_ACK_CLAIM = (
    "tests/integration/test_shutdown.py"
    "::test_a_hand_over_decided_during_the_ack_that_claims_delivers_that_batch_first"
)
STOP_DURING_ACK_CLAIM = (
    "tests/integration/test_shutdown.py"
    "::test_a_stop_during_the_ack_that_claims_the_next_batch_delivers_that_batch"
)
ENQUEUE_NO_GAP = (
    "tests/integration/test_partial_publish.py"
    "::test_an_enqueue_refused_for_a_wrong_key_type_writes_nothing"
)
DROP_HEAD_CHECK = (
    "tests/integration/test_freshness_scripts.py"
    "::test_nothing_is_dropped_unless_the_head_is_the_entry_read_first"
)


@attrs.frozen
class Patch:
    """Replace ``old`` (which must occur exactly once in ``path``) by ``new``."""

    path: str
    old: str
    new: str


@attrs.frozen
class Mutant:
    name: str
    bug: str
    """The deliberate bug, in a few words."""
    patches: tuple[Patch, ...]
    tests: tuple[str, ...]
    """Pytest node ids, quickest first; at least one must fail."""


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "send-without-lease-check",
        "no lease check before sending (ShardWorker._deliver)",
        (
            Patch(
                WORKER,
                "            if self._leases.value(self.shard) != lease:\n"
                "                log.warning(\n"
                '                    "lease lost or about to expire, not sending"',
                "            if False:\n"
                "                log.warning(\n"
                '                    "lease lost or about to expire, not sending"',
            ),
        ),
        (SEND_FENCE,),
    ),
    Mutant(
        "ack-without-lease-check",
        "ACK script without the lease check",
        (
            Patch(
                SCRIPTS,
                "if redis.call('GET', KEYS[2]) ~= ARGV[1] then\n"
                "  return redis.error_reply('LEASE_LOST')\n"
                "end\n"
                "local n = tonumber(ARGV[2])\n",
                "local n = tonumber(ARGV[2])\n",
            ),
        ),
        (SCRIPTS_TESTS, ACK_FENCE),
    ),
    Mutant(
        "post-twice",
        "every batch POSTed twice",
        (
            Patch(
                WORKER,
                "            return await self._api.send_batch(commands)\n",
                "            await self._api.send_batch(commands)\n"
                "            return await self._api.send_batch(commands)\n",
            ),
        ),
        (END_TO_END,),
    ),
    Mutant(
        "swap-first-two",
        "the first two messages of each batch swapped",
        (
            Patch(
                WORKER,
                "        outgoing = [_Outgoing(i, i.command) for i in items"
                " if i.command is not None]\n",
                "        outgoing = [_Outgoing(i, i.command) for i in items"
                " if i.command is not None]\n"
                "        outgoing[:2] = outgoing[:2][::-1]\n",
            ),
        ),
        (END_TO_END,),
    ),
    Mutant(
        "ack-before-delivering",
        "ACK before delivering",
        (
            Patch(
                WORKER,
                "        if not await self._deliver(outgoing, lease):\n"
                "            return\n"
                "        await self._acknowledge(items, lease)\n",
                "        await self._acknowledge(items, lease)\n"
                "        await self._deliver(outgoing, lease)\n",
            ),
        ),
        (KILL, SEND_FENCE),
    ),
    Mutant(
        "claim-ignores-in-flight",
        "CLAIM ignores the in-flight list",
        (
            Patch(
                SCRIPTS,
                "local pending = redis.call('LRANGE', KEYS[2], 0, max_count - 1)\n",
                "local pending = {}\n",
            ),
        ),
        (SCRIPTS_TESTS, KILL),
    ),
    Mutant(
        "claim-without-lease-check",
        "CLAIM script without the lease check",
        (
            Patch(
                SCRIPTS,
                "if redis.call('GET', KEYS[3]) ~= ARGV[1] then\n"
                "  return redis.error_reply('LEASE_LOST')\n"
                "end\n"
                "local max_count",
                "local max_count",
            ),
        ),
        (SCRIPTS_TESTS,),
    ),
    Mutant(
        "renew-any-lease",
        "lease renewal takes over whatever lease is there",
        (Patch(SCRIPTS, "  if current == ARGV[3] then\n", "  if true then\n"),),
        (SCRIPTS_TESTS,),
    ),
    Mutant(
        "no-new-epoch",
        "re-acquiring a lease keeps the old epoch (ABA)",
        (
            Patch(
                SCRIPTS,
                "local epoch = redis.call('HINCRBY', KEYS[2], 'lease_epoch', 1)\n",
                "local epoch = 1\n",
            ),
        ),
        (SCRIPTS_TESTS,),
    ),
    Mutant(
        "release-any-lease",
        "a relay releases a lease that is not its own",
        (
            Patch(
                SCRIPTS,
                "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                "  return redis.call('DEL', KEYS[1])",
                "if true then\n  return redis.call('DEL', KEYS[1])",
            ),
        ),
        (SCRIPTS_TESTS,),
    ),
    Mutant(
        "lease-margin-ignored",
        "the local lease check ignores the clock",
        (
            Patch(
                LEASE,
                "        if time.monotonic() + self.ttl / 3 < self._valid_until[shard]:\n",
                "        if True:\n",
            ),
        ),
        (SCRIPTS_TESTS,),
    ),
    Mutant(
        "enqueue-seq-gap",
        "the enqueue script skips a seq number per call",
        (
            Patch(
                SCRIPTS,
                "local last = redis.call('HINCRBY', KEYS[1], 'seq', n)\n",
                "local last = redis.call('HINCRBY', KEYS[1], 'seq', n + 1)\n",
            ),
        ),
        (END_TO_END,),
    ),
    Mutant(
        "code-100-counted-as-delivered",
        "a command answered with code 100 counted as delivered",
        (
            Patch(
                WINDOW,
                "        elif reply.temporary:\n            retry.append(item)\n",
                "        elif reply.temporary:\n            delivered.append(item)\n",
            ),
        ),
        (RETRIES,),
    ),
    Mutant(
        "versions-not-remembered",
        "the ACK script does not record the versions it acknowledges",
        (
            Patch(
                SCRIPTS,
                "    redis.call('HSET', KEYS[5], unpack(ARGV, i, math.min(i + 1023, last_pair)))\n",
                "",
            ),
        ),
        (REPLAY_MONOTONIC,),
    ),
    Mutant(
        "nothing-superseded",
        "the relay sends what a newer version of its key superseded",
        (
            Patch(
                WORKER,
                "            if stale:\n"
                "                item.command, item.superseded = None, True\n",
                "            if False:\n"
                "                item.command, item.superseded = None, True\n",
            ),
        ),
        (CATCH_UP, REPLAY_MONOTONIC),
    ),
    Mutant(
        "redelivery-sent-whole",
        "a redelivered batch is sent whole, not latest-wins",
        (
            Patch(
                WORKER,
                "                redelivery or mode is Freshness.LATEST,\n",
                "                mode is Freshness.LATEST,\n",
            ),
        ),
        (LEFTOVERS_LATEST, REDELIVERY_MONOTONIC),
    ),
    Mutant(
        "code-100-retries-outdated",
        "after a code 100, a command a delivered newer version superseded is retried",
        (
            Patch(
                WORKER,
                "        kept, dropped = outdated("
                "pending, delivered, lambda o: o.item.candidate)\n",
                "        kept, dropped = list(pending), []\n",
            ),
        ),
        (CODE_100_NEWEST,),
    ),
    Mutant(
        "uncertain-retry-sent-whole",
        "a batch resent after a timeout or a failure is sent whole, not latest-wins",
        (
            Patch(
                WORKER,
                "            kept, dropped = latest_only(pending, lambda o: o.item.candidate)\n",
                "            kept, dropped = list(pending), []\n",
            ),
        ),
        (UNCERTAIN,),
    ),
    Mutant(
        "drop-superseded-without-head-check",
        "the superseded head is dropped without checking it is what the relay read",
        (
            Patch(
                SCRIPTS,
                "if not head or redis.sha1hex(head) ~= ARGV[3] or "
                "redis.call('LLEN', KEYS[1]) < count then\n",
                "if not head then\n",
            ),
        ),
        (DROP_HEAD_CHECK, CATCH_UP),
    ),
    Mutant(
        "tasks-unsupervised",
        "an unexpected exception ends a relay task (lease keeper, sampler, watcher) for good",
        (
            Patch(
                SUPERVISION,
                "        except Exception as exc:\n",
                "        except Exception as exc:\n            raise\n",
            ),
        ),
        (SUPERVISED,),
    ),
    Mutant(
        "enqueue-writes-before-type-check",
        "the enqueue script spends sequence numbers before a wrong key type fails it",
        (
            Patch(
                SCRIPTS,
                "  if found ~= 'none' and found ~= expected[i] then\n",
                "  if false then\n",
            ),
        ),
        (ENQUEUE_NO_GAP,),
    ),
    Mutant(
        "stop-leaves-the-claimed-batch",
        "a stop during the ack that claims the next batch leaves that batch in flight",
        (
            Patch(
                WORKER,
                "        )\n        await self._finish_prefetched()\n",
                "        )\n",
            ),
        ),
        (STOP_DURING_ACK_CLAIM,),
    ),
    Mutant(
        "hand-over-leaves-the-claimed-batch",
        "a hand-over decided during the ack that claims the next batch leaves that batch in flight",
        (
            Patch(
                WORKER,
                "            await self._finish_prefetched()\n"
                "            await self._leases.release(self.shard)\n",
                "            await self._leases.release(self.shard)\n",
            ),
        ),
        (HAND_OVER_DURING_ACK_CLAIM,),
    ),
)
