"""Real-server test rig: example server and Redis processes, plus a raw MCP HTTP helper.

The process launchers live in ``examples._launch`` (the demo uses them too); this package
re-exports them so tests have one import and one implementation.
"""

from examples._launch import (
    LOOPBACK,
    LaunchError,
    RedisProcess,
    ServerCluster,
    ServerProcess,
    bind_listener,
    free_port,
    redis_server_path,
    server_env,
)
from tests.rig.raw import RawMcpSession, RawReply, SseEvent, iter_sse, parse_sse

__all__ = [
    "LOOPBACK",
    "LaunchError",
    "RawMcpSession",
    "RawReply",
    "RedisProcess",
    "ServerCluster",
    "ServerProcess",
    "SseEvent",
    "bind_listener",
    "free_port",
    "iter_sse",
    "parse_sse",
    "redis_server_path",
    "server_env",
]
