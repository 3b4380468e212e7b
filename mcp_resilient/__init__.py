"""mcp-resilient: an MCP client over Streamable HTTP that keeps working when servers fail."""

from ._client import DEFAULT_TIMEOUT, ResilientClient
from ._eras import HANDSHAKE_VERSIONS
from ._events import Event, EventCallback, EventKind
from ._handlers import (
    ElicitationHandler,
    ListChangedHandler,
    LogHandler,
    NotificationHandler,
    ProgressHandler,
    RootsProvider,
    SamplingHandler,
    ServerRequestError,
    apply_schema_defaults,
)
from .errors import (
    ClientClosedError,
    ConnectError,
    EventTooLargeError,
    HTTPStatusError,
    MCPError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
    SessionExpiredError,
    StreamEndedError,
    TransportError,
    UnsupportedProtocolVersionError,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "HANDSHAKE_VERSIONS",
    "ClientClosedError",
    "ConnectError",
    "ElicitationHandler",
    "Event",
    "EventCallback",
    "EventKind",
    "EventTooLargeError",
    "HTTPStatusError",
    "ListChangedHandler",
    "LogHandler",
    "MCPError",
    "NotificationHandler",
    "ProgressHandler",
    "ProtocolError",
    "RequestTimeoutError",
    "ResilientClient",
    "RootsProvider",
    "SamplingHandler",
    "ServerError",
    "ServerRequestError",
    "SessionExpiredError",
    "StreamEndedError",
    "TransportError",
    "UnsupportedProtocolVersionError",
    "__version__",
    "apply_schema_defaults",
]
