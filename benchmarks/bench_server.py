"""The benchmark's server: one FastMCP tool, ``add(a, b)``, on Streamable HTTP.

Run by ``bench_call.py`` in its own process so that its CPU time never counts
against the client being measured. It serves on a listening socket inherited from
the launcher (``--fd``), so no other process can take the port in between, and it
exits when its parent goes away, so a killed benchmark leaves no server behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, cast

import uvicorn
from fastmcp import FastMCP
from starlette.applications import Starlette

MCP_PATH = "/mcp"
STATS_PATH = "/_bench/stats"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Counters:
    """What the server has seen: TCP connections accepted and MCP requests."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0


def count_connections(config: uvicorn.Config, counters: Counters) -> None:
    """Make uvicorn's HTTP protocol (whichever it picks) count the connections it accepts.

    A client that reuses its keep-alive connection adds none per call; one that
    reconnects for every call adds one per call.
    """
    config.load()
    base = config.http_protocol_class

    def connection_made(self: asyncio.Protocol, transport: asyncio.BaseTransport) -> None:
        counters.connections += 1
        base.connection_made(self, transport)

    config.http_protocol_class = cast(
        "type[asyncio.Protocol]",
        type(f"Counting{base.__name__}", (base,), {"connection_made": connection_made}),
    )


class StatsApp:
    """Wraps the MCP app; answers ``GET /_bench/stats`` with the counters and CPU time.

    The server's own CPU time lets the benchmark show what the server spent per call
    (it is not part of any client's figure).
    """

    def __init__(self, app: ASGIApp, counters: Counters) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] == STATS_PATH:
                await self._stats(send)
                return
            self.counters.requests += 1
        await self.app(scope, receive, send)

    async def _stats(self, send: Send) -> None:
        body = json.dumps(
            {
                "connections": self.counters.connections,
                "requests": self.counters.requests,
                "cpu_seconds": time.process_time(),
                "pid": os.getpid(),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(*, json_response: bool = False) -> Starlette:
    """The app: FastMCP's default answer format for ``tools/call`` is SSE."""
    mcp = FastMCP("bench")

    @mcp.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool
    async def sleep(seconds: float) -> str:
        """Wait, then answer (``bench_concurrency.py``: many calls in flight at once)."""
        await asyncio.sleep(min(max(seconds, 0.0), 600.0))
        return "slept"

    return mcp.http_app(path=MCP_PATH, transport="http", json_response=json_response)


def _exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """SIGTERM ourselves once the launcher is gone (re-parenting changes ``getppid``)."""

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark MCP server (FastMCP, one tool).")
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--parent", type=int, default=None, help="exit when this PID is gone")
    parser.add_argument("--json-response", action="store_true", help="answer JSON, not SSE")
    args = parser.parse_args(argv)
    if args.parent is not None:
        _exit_with_parent(args.parent)
    sock = socket.socket(fileno=args.fd)
    counters = Counters()
    app = StatsApp(create_app(json_response=args.json_response), counters)
    config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=1,
        access_log=False,
        backlog=16384,
        timeout_keep_alive=30,
    )
    count_connections(config, counters)
    uvicorn.Server(config).run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
