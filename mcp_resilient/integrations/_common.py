"""What every adapter shares: owning or borrowing a client, and saying "may have run"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import mcp_types

from .._client import ResilientClient
from ..errors import MCPError, OutcomeUnknownError

__all__ = ["ClientLease", "Endpoints", "failure_text", "result_text"]

Endpoints = str | Sequence[str] | ResilientClient
"""Endpoint URL(s) to open a client on, or an open ``ResilientClient`` to borrow."""


def failure_text(exc: MCPError) -> str:
    """The tool failure an agent sees. For an unknown outcome: it may have happened."""
    if isinstance(exc, OutcomeUnknownError):
        # The client's message already says what happened (sent, lost, re-sent with its
        # key, confirmed by the server...): add only what the agent should do about it.
        return (
            f"The call may have run on the server: {exc.message}. Check whether it took"
            " effect before calling it again; running it a second time may not be safe."
        )
    return f"The MCP call failed: {exc}"


def result_text(result: mcp_types.CallToolResult) -> str:
    """The text blocks of a tool result, joined (other blocks as JSON)."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        else:
            parts.append(block.model_dump_json(by_alias=True, exclude_none=True))
    return "\n".join(parts)


class ClientLease:
    """A client the adapter opened itself (closed when the last user leaves) or borrowed."""

    def __init__(self, endpoints: Endpoints, options: dict[str, Any]) -> None:
        if isinstance(endpoints, ResilientClient):
            if options:
                raise TypeError("pass client options to the ResilientClient, not the adapter")
            self._client: ResilientClient | None = endpoints
            self.owned = False
            self.endpoints: tuple[str, ...] = endpoints.endpoints
        else:
            ResilientClient(endpoints, **options)  # bad arguments fail here, at once
            self._client = None
            self.owned = True
            self.endpoints = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        self._options = options
        self._users = 0
        self._lock = anyio.Lock()

    @property
    def client(self) -> ResilientClient:
        if self._client is None:
            raise RuntimeError(
                "the adapter is not connected: use it as an async context manager"
                " (or let the framework enter it)"
            )
        return self._client

    async def acquire(self) -> ResilientClient:
        """Open the client (first user) or count one more user of it."""
        async with self._lock:
            if self.owned and self._users == 0:
                client = ResilientClient(self.endpoints, **self._options)
                await client.__aenter__()
                self._client = client
            self._users += 1
            return self.client

    async def release(self) -> None:
        """One user fewer; the last one closes a client the adapter opened."""
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self.owned and self._users == 0 and self._client is not None:
                client, self._client = self._client, None
                await client.aclose()
