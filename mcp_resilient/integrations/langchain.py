"""LangChain tools built from an MCP server's tool list, called through ``ResilientClient``.

``await load_tools(client)`` gives one ``StructuredTool`` per server tool. A tool's own
error and a failed call both come back as LangChain expects a tool failure to (a
``ToolException`` turned into an error ``ToolMessage``); for an unknown outcome its text
says the action may have happened, and nothing re-sends it.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from .._client import ResilientClient
from ..errors import MCPError
from ._common import Endpoints, failure_text, result_text

__all__ = ["load_tools"]


async def load_tools(endpoints: Endpoints, **options: Any) -> list[BaseTool]:
    """LangChain tools for every tool the server lists.

    Args:
        endpoints: An open ``ResilientClient`` (the tools call through it; keep it open
            while they are used), or endpoint URL(s): then the tool list is read with a
            short-lived client, and each tool call opens its own client with ``options``.
        **options: ``ResilientClient`` options, when ``endpoints`` are URLs.
    """
    if isinstance(endpoints, ResilientClient):
        if options:
            raise TypeError("pass client options to the ResilientClient, not load_tools")
        shared: ResilientClient | None = endpoints
        tools = await endpoints.list_tools()
    else:
        shared = None
        async with ResilientClient(endpoints, **options) as lister:
            tools = await lister.list_tools()
    return [
        _tool(shared, endpoints, options, t.name, t.description or t.title or "", t.input_schema)
        for t in tools
    ]


def _tool(
    shared: ResilientClient | None,
    endpoints: Endpoints,
    options: dict[str, Any],
    name: str,
    description: str,
    schema: dict[str, Any],
) -> BaseTool:
    async def call(**arguments: Any) -> Any:
        try:
            if shared is not None:
                result = await shared.call_tool(name, arguments)
            else:
                assert not isinstance(endpoints, ResilientClient)
                async with ResilientClient(endpoints, **options) as client:
                    result = await client.call_tool(name, arguments)
        except MCPError as exc:
            raise ToolException(failure_text(exc)) from exc
        if result.is_error:
            raise ToolException(result_text(result) or f"tool {name!r} returned an error")
        if result.structured_content is not None:
            return result.structured_content
        return result_text(result)

    return StructuredTool(
        name=name,
        description=description,
        args_schema=dict(schema) or {"type": "object", "properties": {}},
        coroutine=call,
        handle_tool_error=True,
    )
