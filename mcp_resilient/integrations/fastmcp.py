"""A FastMCP client transport over ``ResilientClient``: ``fastmcp.Client(ResilientTransport(urls))``.

FastMCP's ``Client`` keeps its whole API; its messages go through an in-memory bridge to
our client instead of one HTTP connection, so they gain failover, retries and
outcome-unknown safety. The bridge answers FastMCP's ``initialize`` itself (our client
has already opened its own connection), forwards every request, and passes progress
notifications back. A tool call whose outcome is unknown returns an ``isError`` result
saying it may have run (``Client.call_tool`` raises it as a ``ToolError``).
Server-initiated requests (sampling, elicitation, roots) are answered by the handlers
given to ``ResilientTransport``, not by FastMCP's callbacks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import mcp_types
from fastmcp.client.transports.base import ClientTransport, SessionKwargs, TransportOptions
from mcp import ClientSession
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import SessionMessage
from pydantic import BaseModel, ConfigDict
from typing_extensions import Unpack

from .._client import ResilientClient
from ..errors import MCPError, ServerError
from ._common import ClientLease, Endpoints, failure_text

__all__ = ["ResilientTransport"]

logger = logging.getLogger("mcp_resilient")

_INTERNAL_ERROR = -32603


class _AnyResult(BaseModel):
    """A result passed through as the server sent it."""

    model_config = ConfigDict(extra="allow")


class ResilientTransport(ClientTransport):
    """FastMCP transport that sends everything through ``ResilientClient``.

    Args:
        endpoints: Endpoint URL(s) (a client is opened per FastMCP connection), or an open
            ``ResilientClient`` to borrow.
        **options: ``ResilientClient`` options, when ``endpoints`` are URLs.
    """

    # Our client negotiates the protocol era with the servers; FastMCP only ever speaks
    # the handshake to this in-memory bridge.
    legacy_only = True

    def __init__(self, endpoints: Endpoints, **options: Any) -> None:
        self._lease = ClientLease(endpoints, options)

    @property
    def client(self) -> ResilientClient:
        """The client underneath (open while a FastMCP connection is)."""
        return self._lease.client

    def get_session_id(self) -> str | None:
        try:
            return self._lease.client.session_id
        except RuntimeError:
            return None

    def __repr__(self) -> str:
        return f"<ResilientTransport({', '.join(self._lease.endpoints)})>"

    @contextlib.asynccontextmanager
    async def connect_session(
        self,
        *,
        transport_options: TransportOptions | None = None,
        **session_kwargs: Unpack[SessionKwargs],
    ) -> AsyncGenerator[ClientSession, None]:
        options = transport_options or TransportOptions()
        client = await self._lease.acquire()
        try:
            async with create_client_server_memory_streams() as (client_streams, bridge_streams):
                client_read, client_write = client_streams
                bridge_read, bridge_write = bridge_streams
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_Bridge(client, bridge_read, bridge_write).run)
                    try:
                        async with options.session_class(
                            read_stream=client_read, write_stream=client_write, **session_kwargs
                        ) as session:
                            yield session
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            await self._lease.release()


class _Bridge:
    """Reads FastMCP's JSON-RPC messages and answers them with ``ResilientClient`` calls."""

    def __init__(self, client: ResilientClient, read: Any, write: Any) -> None:
        self.client = client
        self.read = read
        self.write = write
        self.running: dict[Any, anyio.CancelScope] = {}

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            async for item in self.read:
                if isinstance(item, Exception):
                    continue
                message = item.message
                if isinstance(message, mcp_types.JSONRPCRequest):
                    tg.start_soon(self.answer, message)
                elif isinstance(message, mcp_types.JSONRPCNotification):
                    await self.notified(message)

    async def notified(self, message: mcp_types.JSONRPCNotification) -> None:
        if message.method == "notifications/cancelled":
            scope = self.running.get((message.params or {}).get("requestId"))
            if scope is not None:
                scope.cancel()
        elif message.method == "notifications/roots/list_changed":
            with contextlib.suppress(MCPError):
                await self.client.send_roots_list_changed()

    async def send(self, message: Any) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self.write.send(SessionMessage(message=message))

    async def answer(self, request: mcp_types.JSONRPCRequest) -> None:
        with anyio.CancelScope() as scope:
            self.running[request.id] = scope
            try:
                result = await self.handle(request.method, dict(request.params or {}))
            except ServerError as exc:
                await self.error(request.id, exc.code, exc.message, exc.data)
            except MCPError as exc:
                await self.error(
                    request.id, _INTERNAL_ERROR, str(exc), {"type": type(exc).__name__}
                )
            else:
                await self.send(
                    mcp_types.JSONRPCResponse(jsonrpc="2.0", id=request.id, result=result)
                )
            finally:
                self.running.pop(request.id, None)

    async def error(self, rid: Any, code: int, message: str, data: Any = None) -> None:
        error = mcp_types.ErrorData(code=code, message=message, data=data)
        await self.send(mcp_types.JSONRPCError(jsonrpc="2.0", id=rid, error=error))

    async def handle(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        client = self.client
        if method == "initialize":
            # Our client is already connected; tell FastMCP what the server told us.
            result = mcp_types.InitializeResult(
                protocol_version=str(params.get("protocolVersion") or client.protocol_version),
                capabilities=client.server_capabilities or mcp_types.ServerCapabilities(),
                server_info=client.server_info
                or mcp_types.Implementation(name="mcp-resilient", version="0"),
                instructions=client.instructions,
            )
            return _dump(result)
        if method == "tools/list":
            tools = await client.list_tools()  # every page, and the annotations cached
            return _dump(mcp_types.ListToolsResult(tools=tools))
        if method == "tools/call":
            return _dump(await self.call_tool(params))
        if method == "ping":
            await client.ping()
            return {}
        if method == "logging/setLevel":
            await client.set_logging_level(params["level"])
            return {}
        if method == "resources/list":
            return _dump(mcp_types.ListResourcesResult(resources=await client.list_resources()))
        if method == "resources/templates/list":
            templates = await client.list_resource_templates()
            return _dump(mcp_types.ListResourceTemplatesResult(resource_templates=templates))
        if method == "resources/read":
            return _dump(await client.read_resource(str(params["uri"])))
        if method == "prompts/list":
            return _dump(mcp_types.ListPromptsResult(prompts=await client.list_prompts()))
        if method == "prompts/get":
            return _dump(await client.get_prompt(str(params["name"]), params.get("arguments")))
        params.pop("_meta", None)  # FastMCP's own request metadata stays on this side
        raw = await client._request(method, params or None, _AnyResult)
        return raw.model_dump(by_alias=True, exclude_none=True)

    async def call_tool(self, params: dict[str, Any]) -> mcp_types.CallToolResult:
        meta = dict(params.get("_meta") or {})
        token = meta.pop("progressToken", None)

        async def progress(value: float, total: float | None, message: str | None) -> None:
            await self.send(
                mcp_types.JSONRPCNotification(
                    jsonrpc="2.0",
                    method="notifications/progress",
                    params={
                        k: v
                        for k, v in {
                            "progressToken": token,
                            "progress": value,
                            "total": total,
                            "message": message,
                        }.items()
                        if v is not None
                    },
                )
            )

        try:
            return await self.client.call_tool(
                str(params.get("name")),
                params.get("arguments") or {},
                meta=meta or None,
                progress_handler=progress if token is not None else None,
            )
        except MCPError as exc:
            if isinstance(exc, ServerError):
                raise
            return mcp_types.CallToolResult(
                content=[mcp_types.TextContent(type="text", text=failure_text(exc))],
                is_error=True,
            )


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")
