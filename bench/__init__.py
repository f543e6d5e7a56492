"""The benchmark: ``python -m bench`` (see ``__main__.py``), ``scripts/bench``.

``harness/`` runs every system on fresh servers and measures it; ``produce``,
``subscriber`` and ``naive_worker`` are the processes it starts; ``report``
turns a run's JSON into the table, the chart and the docs.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the benchmark's processes run there and the docs live there."""

__all__ = ["ROOT"]
