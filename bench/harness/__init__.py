"""Run every system on real, fresh servers and measure it the same way.

A *system* is one way of moving messages from a producer into Centrifugo
(``systems``). For each one the harness starts a fresh Redis and a fresh
Centrifugo on loopback (``stack``), starts the system's mover (``movers``:
relay processes, a naive worker, nothing for the built-in consumer or the
ceiling), and runs the measured ``phases``: throughput, then latency at fixed
offered rates. Then the relay drains a backlog (``backlog``), catches up on one
with and without latest-wins (``catchup``), the publisher runs alone
(``publisher``) and the cost of the JSON profile's checks is measured in process
(``validation``); ``runner`` strings it all together.

Each role is its own process (producer, subscriber, mover, Redis, Centrifugo;
``roles``), all started and stopped through ``devstack``, so CPU seconds and
peak RSS can be read per role from /proc. ``profile`` samples a mover with
py-spy on request.
"""

import os

from .profile import summarize_profile
from .runner import run_all, run_system
from .settings import Settings
from .systems import System, all_systems

if os.name != "posix":  # pragma: no cover - /proc and signals
    raise SystemExit("the benchmark harness needs Linux")

__all__ = ["Settings", "System", "all_systems", "run_all", "run_system", "summarize_profile"]
