"""Subscriber-side helpers: apply each object's updates once, in version order.

``VersionGate`` decides per key whether an envelope is new, newer, a duplicate or
stale, in bounded memory. ``SyncedSubscription`` wraps a centrifuge-python
subscription: it loads the app's state after subscribing, replays what arrived
meanwhile through the gate, and reloads whenever recovery fails. It needs
centrifuge-python only at run time, through the ``Client`` the app passes in.

See ``docs/python-subscribers.md``.
"""

from ..exceptions import SubscriptionLost
from .data import envelope_from_data
from .gate import Decision, DecisionReason, GateStats, VersionGate
from .synced import (
    ErrorCallback,
    LoadResult,
    ReadyCallback,
    ResyncCallback,
    SyncedSubscription,
    UpdateCallback,
    Versioned,
)

__all__ = [
    "Decision",
    "DecisionReason",
    "ErrorCallback",
    "GateStats",
    "LoadResult",
    "ReadyCallback",
    "ResyncCallback",
    "SubscriptionLost",
    "SyncedSubscription",
    "UpdateCallback",
    "VersionGate",
    "Versioned",
    "envelope_from_data",
]
