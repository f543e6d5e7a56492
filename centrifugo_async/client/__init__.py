"""Subscriber-side helpers: apply each object's updates once, in version order.

``VersionGate`` decides per key whether an envelope (an update or a delete) is new,
newer, a duplicate or stale, in bounded memory, keeping tombstones of deleted
objects. ``SyncedSubscription`` wraps a centrifuge-python subscription: it loads the
app's state after subscribing, replays what arrived meanwhile through the gate,
reloads whenever recovery fails, and reloads single objects without going backwards
(``reload_key``). It needs centrifuge-python only at run time, through the
``Client`` the app passes in.

See ``docs/python-subscribers.md``.
"""

from ..exceptions import SubscriptionLost
from .data import envelope_from_data
from .gate import Decision, DecisionReason, GateStats, Known, VersionGate
from .synced import (
    ErrorCallback,
    FetchCallback,
    Fetched,
    LoadResult,
    ReadyCallback,
    ResyncCallback,
    SyncedSubscription,
    SyncState,
    UpdateCallback,
    Versioned,
)

__all__ = [
    "Decision",
    "DecisionReason",
    "ErrorCallback",
    "FetchCallback",
    "Fetched",
    "GateStats",
    "Known",
    "LoadResult",
    "ReadyCallback",
    "ResyncCallback",
    "SubscriptionLost",
    "SyncState",
    "SyncedSubscription",
    "UpdateCallback",
    "VersionGate",
    "Versioned",
    "envelope_from_data",
]
