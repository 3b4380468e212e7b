"""The seam between the session machinery and a protocol era."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import mcp_types

if TYPE_CHECKING:
    from .._exchange import Session
    from ..errors import MCPError

__all__ = ["Era"]


class Era(Protocol):
    """Everything a protocol era decides; the session asks, the era answers."""

    session_id: str | None
    """The server-assigned session id, if this era has sessions."""

    protocol_version: str | None
    """The negotiated protocol version, once known."""

    def headers(self, method: str, params: dict[str, Any] | None = None) -> dict[str, str]:
        """Era headers for a request of ``method`` with ``params`` as sent on the wire.

        ``"GET"``/``"DELETE"`` for streams. The stateless era mirrors body fields
        (method, name, annotated tool arguments) into headers, so it needs the params.
        """
        ...

    def prepare_params(self, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        """Params as they go on the wire (the stateless era adds ``_meta``)."""
        ...

    def translate_error(self, exc: MCPError) -> MCPError:
        """The error as the recovery layer should see it (e.g. "the server changed eras")."""
        ...

    async def open(self, session: Session, *, timeout: float | None) -> mcp_types.InitializeResult:
        """Start talking: the handshake, or discovery."""
        ...

    async def close(self, session: Session) -> None:
        """End the session on the server, if the era has one."""
        ...
