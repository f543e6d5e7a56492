"""The relay: sharded Redis lists -> Centrifugo's HTTP API, in order per key."""

from .api import CentrifugoAPI
from .service import serve
from .settings import RelaySettings

__all__ = ["CentrifugoAPI", "RelaySettings", "serve"]
