"""mcp-resilient: an MCP client over Streamable HTTP that keeps working when servers fail."""

import logging

from ._classify import Failure, classify
from ._client import DEFAULT_TIMEOUT, ClientStats, ResilientClient, ToolResult
from ._eras import AUTO, HANDSHAKE_VERSIONS, STATELESS_VERSIONS
from ._events import Event, EventCallback, EventKind
from ._handlers import (
    ElicitationHandler,
    ListChangedHandler,
    LogHandler,
    NotificationHandler,
    ProgressHandler,
    ResourceUpdatedHandler,
    RootsProvider,
    SamplingHandler,
    ServerRequestError,
    apply_schema_defaults,
)
from ._policy import NO_RETRY, RetryBudget, RetryPolicy
from ._sync import SyncResilientClient
from .errors import (
    AuthError,
    ClientClosedError,
    ConnectError,
    EventTooLargeError,
    HTTPStatusError,
    InvalidRequestError,
    MCPError,
    OutcomeUnknownError,
    OutcomeUnknownTimeoutError,
    ProtocolError,
    RequestTimeoutError,
    ResumeFailedError,
    ServerError,
    SessionExpiredError,
    StreamEndedError,
    ToolError,
    TransportError,
    UnsupportedProtocolVersionError,
)

__version__ = "0.1.0"

# A library never configures logging; applications do. Without this, an application that
# never set up logging would see our WARNING events on stderr through the last-resort handler.
logging.getLogger("mcp_resilient").addHandler(logging.NullHandler())

__all__ = [
    "AUTO",
    "DEFAULT_TIMEOUT",
    "HANDSHAKE_VERSIONS",
    "NO_RETRY",
    "STATELESS_VERSIONS",
    "AuthError",
    "ClientClosedError",
    "ClientStats",
    "ConnectError",
    "ElicitationHandler",
    "Event",
    "EventCallback",
    "EventKind",
    "EventTooLargeError",
    "Failure",
    "HTTPStatusError",
    "InvalidRequestError",
    "ListChangedHandler",
    "LogHandler",
    "MCPError",
    "NotificationHandler",
    "OutcomeUnknownError",
    "OutcomeUnknownTimeoutError",
    "ProgressHandler",
    "ProtocolError",
    "RequestTimeoutError",
    "ResilientClient",
    "ResourceUpdatedHandler",
    "ResumeFailedError",
    "RetryBudget",
    "RetryPolicy",
    "RootsProvider",
    "SamplingHandler",
    "ServerError",
    "ServerRequestError",
    "SessionExpiredError",
    "StreamEndedError",
    "SyncResilientClient",
    "ToolError",
    "ToolResult",
    "TransportError",
    "UnsupportedProtocolVersionError",
    "__version__",
    "apply_schema_defaults",
    "classify",
]
