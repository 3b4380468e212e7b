"""An OpenAI Agents SDK MCP server over ``ResilientClient``: ``Agent(..., mcp_servers=[...])``.

The SDK lists the tools and calls them through this object; the calls go through our
client, so they survive a backend kill. A failure that leaves the outcome unknown comes
back as an ``isError`` tool result whose text says the action may have happened, which
the SDK hands to the model as the tool's output; nothing re-sends it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mcp_types
from agents.mcp import MCPServer
from agents.run_context import RunContextWrapper

from .._client import ResilientClient
from ..errors import MCPError
from ._common import ClientLease, Endpoints, failure_text

if TYPE_CHECKING:
    from agents.agent import AgentBase

__all__ = ["ResilientMCPServer"]


class ResilientMCPServer(MCPServer):
    """An MCP server for the OpenAI Agents SDK, reached through ``ResilientClient``.

    Use it as ``async with ResilientMCPServer(urls) as server:`` (or ``connect()`` /
    ``cleanup()``), then ``Agent(..., mcp_servers=[server])``.

    Args:
        endpoints: Endpoint URL(s) (it opens its own client), or an open ``ResilientClient``.
        name: A readable name (default: the first endpoint).
        use_structured_content: Give the model ``structuredContent`` instead of the text.
        **options: ``ResilientClient`` options, when ``endpoints`` are URLs.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        name: str | None = None,
        use_structured_content: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(use_structured_content=use_structured_content)
        self._lease = ClientLease(endpoints, options)
        self._name = name or self._lease.endpoints[0]
        self._tools: list[mcp_types.Tool] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def client(self) -> ResilientClient:
        """The client underneath (open between ``connect`` and ``cleanup``)."""
        return self._lease.client

    async def connect(self) -> None:
        await self._lease.acquire()

    async def cleanup(self) -> None:
        await self._lease.release()

    async def __aenter__(self) -> ResilientMCPServer:
        await self.connect()
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.cleanup()

    async def list_tools(
        self,
        run_context: RunContextWrapper[Any] | None = None,
        agent: AgentBase | None = None,
    ) -> list[mcp_types.Tool]:
        self._tools = await self.client.list_tools()
        return self._tools

    @property
    def cached_tools(self) -> list[mcp_types.Tool] | None:
        return self._tools

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> mcp_types.CallToolResult:
        try:
            return await self.client.call_tool(tool_name, arguments, meta=meta)
        except MCPError as exc:
            return mcp_types.CallToolResult(
                content=[mcp_types.TextContent(type="text", text=failure_text(exc))],
                is_error=True,
            )

    async def list_prompts(self) -> mcp_types.ListPromptsResult:
        return mcp_types.ListPromptsResult(prompts=await self.client.list_prompts())

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None
    ) -> mcp_types.GetPromptResult:
        return await self.client.get_prompt(name, arguments)

    async def list_resources(self, cursor: str | None = None) -> mcp_types.ListResourcesResult:
        return mcp_types.ListResourcesResult(resources=await self.client.list_resources())

    async def list_resource_templates(
        self, cursor: str | None = None
    ) -> mcp_types.ListResourceTemplatesResult:
        return mcp_types.ListResourceTemplatesResult(
            resource_templates=await self.client.list_resource_templates()
        )

    async def read_resource(self, uri: str) -> mcp_types.ReadResourceResult:
        return await self.client.read_resource(uri)
