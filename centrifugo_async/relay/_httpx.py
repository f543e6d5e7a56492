"""The relay's transport over httpx: ``https://`` URLs, and unit tests with ``httpx.MockTransport``.

Plain ``http://`` goes through the lean ``KeepAliveClient`` instead (a tenth of
the CPU per request, see ``_http11.py``); TLS is where httpx earns its cost.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from .transport import Response, TransportCause, TransportError

__all__ = ["HttpxTransport"]


class HttpxTransport:
    """POST to one base URL through an ``httpx.AsyncClient`` with a keep-alive pool.

    ``transport`` replaces httpx's network layer (``httpx.MockTransport`` in unit
    tests). Timeouts end as ``TransportError`` with cause ``TIMEOUT``, every other
    request failure with cause ``NETWORK``.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def post(self, path: str, body: bytes) -> Response:
        try:
            response = await self._client.post(f"{self.base_url}{path}", content=body)
        except httpx.TimeoutException as exc:
            raise TransportError(TransportCause.TIMEOUT, _detail(exc)) from exc
        except httpx.RequestError as exc:
            raise TransportError(TransportCause.NETWORK, _detail(exc)) from exc
        return Response(response.status_code, response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def _detail(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
