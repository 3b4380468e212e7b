"""Transports: how MCP messages travel. Today: Streamable HTTP, on two paths (see _base)."""

from ._base import Transport, WireResponse
from ._core import CoreTransport, http2_available, lean_path_possible
from ._http import (
    POST_ACCEPT,
    SSE_ACCEPT,
    HTTPWire,
    SeenIds,
    StreamCursor,
    ended_without_answer,
)
from ._httpx import HttpxTransport
from ._limits import CURRENT_MARK, EndpointSlots, QueueMark, default_connection_limit

__all__ = [
    "CURRENT_MARK",
    "POST_ACCEPT",
    "SSE_ACCEPT",
    "CoreTransport",
    "EndpointSlots",
    "HTTPWire",
    "HttpxTransport",
    "QueueMark",
    "SeenIds",
    "StreamCursor",
    "Transport",
    "WireResponse",
    "default_connection_limit",
    "ended_without_answer",
    "http2_available",
    "lean_path_possible",
]
