"""Transports: how MCP messages travel. Today: Streamable HTTP."""

from ._http import (
    POST_ACCEPT,
    SSE_ACCEPT,
    HTTPWire,
    SeenIds,
    StreamCursor,
    ended_without_answer,
)

__all__ = [
    "POST_ACCEPT",
    "SSE_ACCEPT",
    "HTTPWire",
    "SeenIds",
    "StreamCursor",
    "ended_without_answer",
]
