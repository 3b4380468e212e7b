"""``ToolResult``: the protocol's ``CallToolResult``, plus what the caller usually wants.

A subclass, so every field and method of ``mcp_types.CallToolResult`` stays as it was
(``isinstance`` checks, ``model_dump``, ``structured_content``); ``data`` and ``endpoint``
are additions the client fills in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mcp_types
from pydantic import PrivateAttr

__all__ = ["ToolResult", "unwrapped"]

_WRAP_SCHEMA_KEY = "x-fastmcp-wrap-result"
"""Output-schema flag of a tool whose non-object result is sent as ``{"result": value}``."""


def unwrapped(result: mcp_types.CallToolResult, output_schema: Mapping[str, Any] | None) -> Any:
    """The structured result, with a wrapped non-object value taken out of ``{"result": ...}``.

    Wrapped means the tool's output schema says so (``x-fastmcp-wrap-result``), or the
    result's ``_meta`` does (FastMCP marks it ``{"fastmcp": {"wrap_result": true}}``).
    """
    structured = result.structured_content
    if structured is None:
        return None
    meta = result.meta if isinstance(result.meta, Mapping) else {}
    marker = meta.get("fastmcp")
    wrapped = bool(output_schema and output_schema.get(_WRAP_SCHEMA_KEY)) or (
        isinstance(marker, Mapping) and marker.get("wrap_result") is True
    )
    if wrapped and isinstance(structured, Mapping) and "result" in structured:
        return structured["result"]
    return structured


class ToolResult(mcp_types.CallToolResult):
    """A tool's answer: ``mcp_types.CallToolResult`` with ``data`` and ``endpoint`` added."""

    _data: Any = PrivateAttr(default=None)
    _endpoint: str | None = PrivateAttr(default=None)

    @property
    def data(self) -> Any:
        """The structured result (``structuredContent``), unwrapped; ``None`` without one.

        A tool that returns a plain value (``int``, ``list``...) has it sent as
        ``{"result": value}``; ``data`` is the value itself, as with FastMCP's client.
        Read-only: ``structured_content`` is the field as sent.
        """
        return self._data

    @property
    def endpoint(self) -> str | None:
        """The endpoint URL that answered this call (after any retry or failover)."""
        return self._endpoint

    def __eq__(self, other: object) -> bool:
        # Equal to a plain CallToolResult with the same fields, as before this subclass.
        if isinstance(other, mcp_types.CallToolResult):
            return self.__dict__ == other.__dict__
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable model, as its base

    @classmethod
    def of(
        cls,
        result: mcp_types.CallToolResult,
        *,
        endpoint: str | None,
        output_schema: Mapping[str, Any] | None,
    ) -> ToolResult:
        """Wrap a validated ``CallToolResult`` (no second validation)."""
        made = cls.model_construct(
            _fields_set=result.model_fields_set, **dict(result.__dict__.items())
        )
        made._data = unwrapped(result, output_schema)
        made._endpoint = endpoint
        return made
