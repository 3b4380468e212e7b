"""A FastMCP server on Hypercorn over TLS, offering HTTP/2 by ALPN (as a load balancer would).

Run as ``python -m tests.http2.h2_server --fd N --certfile C --keyfile K``: it serves on the
inherited listening socket, answers ``/health`` with its pid and ``/stats`` with the HTTP
versions and the TCP connections its MCP requests came over. The tool ``gather(n)`` waits
until ``n`` calls are in it at once (at most 20 s), so a test sees how many calls one
connection carried at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections import Counter
from typing import Any

from fastmcp import FastMCP
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.requests import Request
from starlette.responses import JSONResponse

from examples.stateful_server import exit_with_parent

versions: Counter[str] = Counter()
connections: set[tuple[str, int]] = set()
state = {"in_flight": 0, "most": 0}


def create_app() -> Any:
    mcp = FastMCP("h2")

    @mcp.tool
    async def gather(n: int) -> int:
        """Wait until ``n`` calls are here at once (or 20 s); answer how many were."""
        state["in_flight"] += 1
        state["most"] = max(state["most"], state["in_flight"])
        try:
            for _ in range(2000):
                if state["most"] >= n:
                    break
                await asyncio.sleep(0.01)
            return state["most"]
        finally:
            state["in_flight"] -= 1

    @mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid()})

    @mcp.custom_route("/stats", methods=["GET"])
    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(
            {"versions": dict(versions), "connections": len(connections), "most": state["most"]}
        )

    app = mcp.http_app(path="/mcp")

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            versions[scope["http_version"]] += 1
            if scope.get("client"):
                connections.add(tuple(scope["client"]))
        await app(scope, receive, send)

    return recording


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--instance", default="h2")
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    args = parser.parse_args()
    parent = os.environ.get("MCP_EXIT_WITH_PARENT", "")
    if parent.isdigit():
        exit_with_parent(int(parent))
    socket.socket(fileno=args.fd).detach()  # hypercorn takes the descriptor itself
    config = Config()
    config.bind = [f"fd://{args.fd}"]
    config.certfile = args.certfile
    config.keyfile = args.keyfile
    config.alpn_protocols = ["h2", "http/1.1"]
    config.h2_max_concurrent_streams = 100
    config.graceful_timeout = 1
    app = create_app()
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
