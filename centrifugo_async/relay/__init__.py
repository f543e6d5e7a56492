"""The relay: sharded Redis lists -> Centrifugo's HTTP API, in order per key."""

from .api import CentrifugoAPI, open_transport
from .service import serve
from .settings import RelaySettings
from .transport import Response, Transport, TransportCause, TransportError

__all__ = [
    "CentrifugoAPI",
    "RelaySettings",
    "Response",
    "Transport",
    "TransportCause",
    "TransportError",
    "open_transport",
    "serve",
]
