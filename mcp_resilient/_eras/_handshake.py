"""The handshake era (2025-03-26, 2025-06-18, 2025-11-25): initialize and sessions."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import mcp_types
from pydantic import ValidationError

from .._headers import valid_session_id
from .._transports import StreamCursor
from ..errors import HTTPStatusError, MCPError, ProtocolError, UnsupportedProtocolVersionError
from ._errors import EraChangedError, OnEraChanged, modern_error_code

if TYPE_CHECKING:
    from .._exchange import Session

__all__ = ["HANDSHAKE_VERSIONS", "HandshakeEra", "valid_session_id"]

logger = logging.getLogger("mcp_resilient")

HANDSHAKE_VERSIONS: tuple[str, ...] = ("2025-11-25", "2025-06-18", "2025-03-26")
"""Handshake-era versions this client speaks, newest first."""


class HandshakeEra:
    """Sessions with ``initialize``, ``Mcp-Session-Id`` and a GET listen stream."""

    def __init__(
        self,
        *,
        protocol_version: str,
        client_info: mcp_types.Implementation,
        capabilities: dict[str, Any],
        on_era_changed: OnEraChanged | None = None,
    ) -> None:
        if protocol_version not in HANDSHAKE_VERSIONS:
            raise ValueError(
                f"protocol_version {protocol_version!r} is not a handshake-era version"
                f" ({', '.join(HANDSHAKE_VERSIONS)})"
            )
        self.offered_version = protocol_version
        self.client_info = client_info
        self.capabilities = capabilities
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._headers: dict[str, str] = {}
        self.on_era_changed = on_era_changed

    def headers(self, method: str, params: dict[str, Any] | None = None) -> dict[str, str]:
        return self._headers

    def translate_error(self, exc: MCPError) -> MCPError:
        """In ``auto`` mode, a new-era error to a session request means the server changed."""
        if (
            self.on_era_changed is None
            or not isinstance(exc, HTTPStatusError)
            or exc.status_code != 400
            or modern_error_code(exc.body) is None
        ):
            return exc
        self.on_era_changed(exc.endpoint or "")
        return EraChangedError(
            exc.status_code,
            f"the server answered a handshake-era request with a {modern_error_code(exc.body)}"
            " error of the 2026-07-28 era: it changed eras, negotiating again",
            endpoint=exc.endpoint,
            session_id=exc.session_id,
            body=exc.body,
        )

    def prepare_params(self, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        return params

    async def open(self, session: Session, *, timeout: float | None) -> mcp_types.InitializeResult:
        cursor = StreamCursor()
        raw = await session.request(
            "initialize",
            {
                "protocolVersion": self.offered_version,
                "capabilities": self.capabilities,
                "clientInfo": self.client_info.model_dump(by_alias=True, exclude_none=True),
            },
            timeout=timeout,
            cancellable=False,
            cursor=cursor,
        )
        session_id = cursor.headers.get("mcp-session-id") if cursor.headers is not None else None
        if session_id is not None and not valid_session_id(session_id):
            raise ProtocolError(
                f"server sent an invalid Mcp-Session-Id {session_id[:80]!r}"
                " (must be 1-1024 visible ASCII characters)",
                endpoint=session.endpoint,
            )
        try:
            result = mcp_types.InitializeResult.model_validate(raw)
        except ValidationError as exc:
            raise ProtocolError(
                f"server sent an invalid initialize result ({exc.error_count()} errors)",
                endpoint=session.endpoint,
                session_id=session_id,
            ) from None
        self.session_id = session_id
        if result.protocol_version not in HANDSHAKE_VERSIONS:
            await self._abandon(session)
            raise UnsupportedProtocolVersionError(
                result.protocol_version, HANDSHAKE_VERSIONS, endpoint=session.endpoint
            )
        self.protocol_version = result.protocol_version
        headers = {"MCP-Protocol-Version": result.protocol_version}
        if session_id is not None:
            headers["Mcp-Session-Id"] = session_id
        self._headers = headers
        await session.notify("notifications/initialized")
        return result

    async def _abandon(self, session: Session) -> None:
        if self.session_id is None:
            return
        try:
            await self.close(session)
        except MCPError as exc:
            logger.debug("could not end the abandoned session: %s", exc)

    async def close(self, session: Session) -> None:
        if self.session_id is None:
            return
        headers = dict(self._headers) or {"Mcp-Session-Id": self.session_id}
        status = await session.wire.delete(headers, session_id=self.session_id)
        if status not in (200, 202, 204, 404, 405):
            logger.debug("DELETE of session %s answered %d", self.session_id, status)
