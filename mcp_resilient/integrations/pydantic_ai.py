"""A pydantic-ai toolset over ``ResilientClient``: ``Agent(model, toolsets=[ResilientToolset(urls)])``.

The agent sees the server's tools; each call goes through our client, so it survives a
backend kill. A tool's own error comes back as pydantic-ai's MCP toolset reports it (a
``ModelRetry`` the model can act on); an unknown outcome is a ``ToolFailed`` whose text
says the action may have happened, so neither the client nor the model re-runs it blindly.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic_ai import RunContext
from pydantic_ai.exceptions import ModelRetry, ToolFailed
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from .._client import ResilientClient
from ..errors import MCPError
from ._common import ClientLease, Endpoints, failure_text, result_text

__all__ = ["ResilientToolset"]

# The server validates the arguments against its own schema; here they only need to be a dict.
_ARGS_VALIDATOR = pydantic_core.SchemaValidator(
    pydantic_core.core_schema.dict_schema(
        pydantic_core.core_schema.str_schema(), pydantic_core.core_schema.any_schema()
    )
)


class ResilientToolset(AbstractToolset[Any]):
    """The tools of an MCP server, reached through ``ResilientClient``.

    Args:
        endpoints: Endpoint URL(s) (the toolset opens and closes its own client), or an
            open ``ResilientClient`` (borrowed, never closed here).
        id: The toolset's id (needed only for durable execution; default none).
        max_retries: Retries the model gets after a tool error (default: the agent's).
        **options: ``ResilientClient`` options, when ``endpoints`` are URLs.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        id: str | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> None:
        self._lease = ClientLease(endpoints, options)
        self._id = id
        self.max_retries = max_retries

    @property
    def id(self) -> str | None:
        return self._id

    @property
    def client(self) -> ResilientClient:
        """The client underneath (open while the toolset is entered)."""
        return self._lease.client

    async def __aenter__(self) -> ResilientToolset:
        await self._lease.acquire()
        return self

    async def __aexit__(self, *args: Any) -> bool | None:
        await self._lease.release()
        return None

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        tools = await self.client.list_tools()
        max_retries = self.max_retries if self.max_retries is not None else ctx.max_retries
        return {
            tool.name: ToolsetTool(
                toolset=self,
                tool_def=ToolDefinition(
                    name=tool.name,
                    description=tool.description or tool.title or "",
                    parameters_json_schema=dict(tool.input_schema)
                    or {"type": "object", "properties": {}},
                ),
                max_retries=max_retries,
                args_validator=_ARGS_VALIDATOR,
            )
            for tool in tools
        }

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        try:
            result = await self.client.call_tool(name, tool_args)
        except MCPError as exc:
            # Terminal for this call: the model sees the text and decides, nothing re-runs it.
            raise ToolFailed(failure_text(exc)) from exc
        if result.is_error:
            raise ModelRetry(result_text(result) or f"tool {name!r} returned an error")
        if result.structured_content is not None:
            return result.structured_content
        return result_text(result)
