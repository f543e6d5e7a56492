"""Replay what a subscriber received through ``VersionGate``, with the gate given work to do.

A gate that only ever sees new versions proves nothing (its counters stay at
``0 == 0``). Here the gate remembers few keys, so it keeps forgetting them and
must answer ``evicted`` (the app reloads the object and seeds the gate), and a
stale or repeated copy of a recent update is injected after every few arrivals.
The app model applies what the gate accepts; the replay then checks that

- no injected copy was applied,
- the app never moved a key backwards (a version applied after a newer one),
- every key ends at the newest version that arrived for it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import attrs

from centrifugo_async.client import VersionGate

__all__ = ["GateReplay", "replay"]

INJECT_EVERY = 5
"""After every 5th arrival, a copy (stale or repeated) of that update is fed too."""


@attrs.define
class GateReplay:
    applied: int = 0
    """Arrivals the gate accepted."""
    dropped: int = 0
    """Arrivals dropped as duplicate or stale."""
    reloads: int = 0
    """Updates for a forgotten key: the app reloads the object and seeds the gate."""
    injected: int = 0
    injected_applied: int = 0
    """Injected copies the gate let through: must be 0."""
    regressions: int = 0
    """Updates applied although the app already held that version or a newer one: must be 0."""
    unconverged: int = 0
    """Keys whose final version in the app is not the newest that arrived: must be 0."""

    @property
    def worked(self) -> bool:
        """The gate had to evict, and had copies to drop."""
        return self.reloads > 0 and self.injected > 0

    @property
    def passed(self) -> bool:
        return (
            self.worked
            and self.injected_applied == 0
            and self.regressions == 0
            and self.unconverged == 0
        )

    def add(self, other: GateReplay) -> None:
        for field in attrs.fields(GateReplay):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def replay(arrivals: Iterable[dict[str, Any]], max_keys: int, seed: int) -> GateReplay:
    """Feed ``arrivals`` (envelopes, in arrival order) through a gate of ``max_keys`` keys."""
    rng = random.Random(seed)
    gate = VersionGate(max_keys=max_keys)
    app: dict[str, int] = {}
    newest: dict[str, int] = {}
    result = GateReplay()

    def feed(key: str, version: int, injected: bool) -> None:
        decision = gate.check(key, version)
        if decision.accepted:
            if version <= app.get(key, -1):
                result.regressions += 1
            app[key] = version
            if injected:
                result.injected_applied += 1
            else:
                result.applied += 1
        elif decision.reason == "evicted":
            # The app reloads the object; the database holds at least every
            # version that has reached a subscriber.
            app[key] = max(app.get(key, -1), newest[key])
            gate.seed(key, app[key])
            result.reloads += 1
        elif not injected:
            result.dropped += 1

    for n, envelope in enumerate(arrivals, start=1):
        key, version = envelope["key"], envelope["version"]
        newest[key] = max(newest.get(key, -1), version)
        feed(key, version, injected=False)
        if n % INJECT_EVERY == 0:
            copy = version - 1 if version > 1 and rng.random() < 0.5 else version
            result.injected += 1
            feed(key, copy, injected=True)
    result.unconverged = sum(app.get(key) != version for key, version in newest.items())
    return result
