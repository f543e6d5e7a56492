"""The relay's transport over httpx: ``https://`` URLs, and unit tests with ``httpx.MockTransport``.

Plain ``http://`` goes through the lean ``KeepAliveClient`` instead (a tenth of
the CPU per request, see ``_http11.py``); TLS is where httpx earns its cost.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from ._http11 import MAX_BODY_BYTES
from .transport import Response, TransportCause, TransportError

__all__ = ["HttpxTransport"]


class HttpxTransport:
    """POST to one base URL through an ``httpx.AsyncClient`` with a keep-alive pool.

    ``transport`` replaces httpx's network layer (``httpx.MockTransport`` in unit
    tests). Timeouts end as ``TransportError`` with cause ``TIMEOUT``, every other
    request failure, and a body over ``max_body_bytes``, with cause ``NETWORK``.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int = 64,
        max_body_bytes: int = MAX_BODY_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self._client = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> Response:
        url = f"{self.base_url}{path}"
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as r:
                parts: list[bytes] = []
                total = 0
                async for chunk in r.aiter_bytes():
                    total += len(chunk)
                    if total > self.max_body_bytes:
                        raise TransportError(
                            TransportCause.NETWORK,
                            f"response body too large: over {self.max_body_bytes} bytes",
                        )
                    parts.append(chunk)
                return Response(r.status_code, b"".join(parts))
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, httpx.ConnectTimeout)
            raise TransportError(TransportCause.TIMEOUT, _detail(exc), sent=sent) from exc
        except httpx.RequestError as exc:
            sent = not isinstance(exc, httpx.ConnectError)
            raise TransportError(TransportCause.NETWORK, _detail(exc), sent=sent) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def _detail(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
