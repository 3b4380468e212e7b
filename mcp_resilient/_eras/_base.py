"""The seam between the session machinery and a protocol era."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import mcp_types

if TYPE_CHECKING:
    from .._session import Session

__all__ = ["Era"]


class Era(Protocol):
    """Everything a protocol era decides; the session asks, the era answers."""

    session_id: str | None
    """The server-assigned session id, if this era has sessions."""

    protocol_version: str | None
    """The negotiated protocol version, once known."""

    def headers(self, method: str) -> dict[str, str]:
        """Era headers for a request of ``method`` (``"GET"``/``"DELETE"`` for streams)."""
        ...

    def prepare_params(self, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        """Params as they go on the wire (the stateless era adds ``_meta``)."""
        ...

    async def open(self, session: Session, *, timeout: float | None) -> mcp_types.InitializeResult:
        """Start talking: the handshake, or discovery."""
        ...

    async def close(self, session: Session) -> None:
        """End the session on the server, if the era has one."""
        ...
