"""The transport seam: what HTTPWire needs from whatever carries its requests.

Two paths implement it: the lean one (``_core``: httpcore driven directly, for a client
that owns its HTTP stack) and the httpx one (``_httpx``: a caller's ``httpx.AsyncClient``,
``httpx.Auth`` flows, proxies, event hooks). Both raise httpx's exception types, so the
wire maps failures to typed errors in one place, whichever path carried them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol

__all__ = ["Transport", "WireResponse"]


class WireResponse:
    """A response whose body is still to be read: status, headers, raw body, close.

    ``headers`` answers ``get`` with lower-case names. ``aclose`` is idempotent and gives
    the request's connection slot back.
    """

    __slots__ = (
        "_close",
        "_raw",
        "_release",
        "content",
        "headers",
        "is_stream_consumed",
        "status_code",
    )

    def __init__(
        self,
        status_code: int,
        headers: Mapping[str, str],
        raw: Callable[[], AsyncIterator[bytes]],
        close: Callable[[], Awaitable[None]],
        release: Callable[[], None] | None,
        *,
        content: bytes | None = None,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self._raw = raw
        self._close = close
        self._release = release
        # A body given whole (httpx.MockTransport, respx, the testing fake) was read, and
        # decoded, when the response was built: there is no raw stream left to read.
        self.is_stream_consumed = content is not None
        self.content = content or b""

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it comes off the wire (still compressed, if it was)."""
        return self._raw()

    async def aclose(self) -> None:
        try:
            await self._close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class Transport(Protocol):
    """Sends one request and returns its response unread (httpx exception types on failure)."""

    async def send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None
    ) -> WireResponse: ...

    async def aclose(self) -> None: ...
