"""The httpx path: where users plug in (their client, ``httpx.Auth``, hooks, proxies)."""

from __future__ import annotations

import httpx

from ._base import WireResponse
from ._limits import EndpointSlots

__all__ = ["HttpxTransport"]


class HttpxTransport:
    """Sends through an ``httpx.AsyncClient``; never follows a redirect."""

    __slots__ = ("auth", "client", "slots")

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        auth: httpx.Auth | None = None,
        slots: EndpointSlots | None = None,
    ) -> None:
        self.client = client
        self.auth = auth
        self.slots = slots

    async def send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None
    ) -> WireResponse:
        slots = self.slots.get(url) if self.slots is not None else None
        if slots is not None:
            await slots.take()
        try:
            request = self.client.build_request(method, url, headers=headers, content=content)
            # Never follow a redirect, whatever the client's own setting: the credentials
            # in our headers must not reach another origin, and a 3xx becomes a typed error.
            if self.auth is not None:
                response = await self.client.send(
                    request, stream=True, auth=self.auth, follow_redirects=False
                )
            else:
                response = await self.client.send(request, stream=True, follow_redirects=False)
        except BaseException:
            if slots is not None:
                slots.give()
            raise
        return WireResponse(
            response.status_code,
            response.headers,
            response.aiter_raw,
            response.aclose,
            slots.give if slots is not None else None,
            content=response.content if response.is_stream_consumed else None,
        )

    async def aclose(self) -> None:
        """The client belongs to whoever made it: nothing to close here."""
