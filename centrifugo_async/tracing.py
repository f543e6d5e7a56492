"""OpenTelemetry across the queue: the publisher's trace goes on in the relay's request.

Optional, with the ``otel`` extra (``opentelemetry-api``), and off unless asked
for: ``Publisher(..., tracing=True)`` writes the current span's W3C trace
context into each envelope (``traceparent``); a relay with ``tracing`` on
sends each batch that carries one inside a span of its own, and passes that
span's ``traceparent`` header to Centrifugo, whose own tracing (if enabled)
continues it. Exporting is the application's business: whatever tracer
provider it configures (the SDK, ``opentelemetry-instrument``) receives the
spans; without one they are no-ops.

The relay's half, and how a batch of many publishes is traced, is in
``relay/tracing.py``.

Nothing here imports OpenTelemetry until tracing is switched on, so when it is
off the cost is one ``None`` check per publish call and per request
(measured in docs/performance.md).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "INSTALL_HINT",
    "current_traceparent",
    "opentelemetry_missing",
    "require_opentelemetry",
]

INSTALL_HINT = "pip install 'centrifugo-async[otel]'"


def opentelemetry_missing() -> bool:
    """Whether ``opentelemetry-api`` cannot be imported."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is None
    except ModuleNotFoundError:  # not even the opentelemetry namespace
        return True


def require_opentelemetry(what: str) -> None:
    """Raise ``ImportError`` naming ``what`` and the extra to install, if the API is absent."""
    if opentelemetry_missing():
        raise ImportError(f"{what} needs OpenTelemetry: {INSTALL_HINT}")


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None when there is no valid one."""
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get("traceparent")


@functools.cache
def _propagator() -> TraceContextTextMapPropagator:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()
