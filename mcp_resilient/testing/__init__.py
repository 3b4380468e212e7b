"""Testing toolkit: a fake MCP server (Streamable HTTP) with scripted faults.

Use the pytest fixtures (``mcp_mock``, ``mcp_mock_cluster``, ``mcp_mock_factory``,
``mcp_mock_network``; loaded automatically once mcp-resilient is installed) or start a
server yourself::

    with MockMCPServer("http://mcp.test/mcp") as server:
        server.faults.status(503, times=2)
        ...

It works with any async httpx-based client, not only ``ResilientClient``. respx is needed
only to intercept traffic (``mcp-resilient[testing]``); ``server.transport()`` works without.

Names are imported lazily: pytest imports this package for the plugin in every run, and
most runs never touch the fake.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._faults import (
        MAX_DELAY_SECONDS,
        Fault,
        FaultScript,
        GarbageKind,
        ResponseMode,
        Target,
    )
    from ._features import RPCError, ToolContext
    from ._network import MockClusterFactory, MockNetwork, MockServerFactory
    from ._records import RecordedRequest, RequestLog, ToolExecution
    from ._server import (
        ALL_VERSIONS,
        DEFAULT_URL,
        STATELESS_VERSIONS,
        SUPPORTED_VERSIONS,
        Eras,
        MockMCPServer,
        MockSession,
    )
    from ._sse import SSEEvent, parse_sse

__all__ = [
    "ALL_VERSIONS",
    "DEFAULT_URL",
    "MAX_DELAY_SECONDS",
    "STATELESS_VERSIONS",
    "SUPPORTED_VERSIONS",
    "Eras",
    "Fault",
    "FaultScript",
    "GarbageKind",
    "MockClusterFactory",
    "MockMCPServer",
    "MockNetwork",
    "MockServerFactory",
    "MockSession",
    "RPCError",
    "RecordedRequest",
    "RequestLog",
    "ResponseMode",
    "SSEEvent",
    "Target",
    "ToolContext",
    "ToolExecution",
    "parse_sse",
]

_HOMES = {
    "MAX_DELAY_SECONDS": "_faults",
    "Fault": "_faults",
    "FaultScript": "_faults",
    "GarbageKind": "_faults",
    "ResponseMode": "_faults",
    "Target": "_faults",
    "RPCError": "_features",
    "ToolContext": "_features",
    "MockClusterFactory": "_network",
    "MockNetwork": "_network",
    "MockServerFactory": "_network",
    "RecordedRequest": "_records",
    "RequestLog": "_records",
    "ToolExecution": "_records",
    "ALL_VERSIONS": "_server",
    "DEFAULT_URL": "_server",
    "Eras": "_server",
    "STATELESS_VERSIONS": "_server",
    "SUPPORTED_VERSIONS": "_server",
    "MockMCPServer": "_server",
    "MockSession": "_server",
    "SSEEvent": "_sse",
    "parse_sse": "_sse",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
