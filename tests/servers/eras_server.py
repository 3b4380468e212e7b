"""One small MCP server, four ways: FastMCP 4 in both eras or in one, and the official SDK.

The integration tests run it in a child process to check that ``protocol_version="auto"``
picks the right era with each kind of real server, and that every public method works:

- ``fastmcp``: FastMCP 4 as it comes, both eras on one endpoint (the era is per request);
- ``fastmcp-stateless``: FastMCP 4 serving only 2026-07-28;
- ``fastmcp-handshake``: FastMCP 4 serving only the handshake era (2025-11-25 and older),
  answering a 2026-07-28 request the way pre-2026 servers do;
- ``mcp``: the official SDK 2.x server (``mcp.server.mcpserver.MCPServer``), both eras.

FastMCP 4.2 has no switch for one era: both restrictions are a thin ASGI layer in front of
its app that answers what a one-era server answers, before FastMCP sees the request.

    python -m tests.servers.eras_server --kind fastmcp --fd 3 --instance a
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import uvicorn
from fastmcp import Context as FastMCPContext
from fastmcp import FastMCP
from mcp.server.mcpserver import Context as MCPContext
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse

from examples.stateful_server import exit_with_parent

KINDS = ("fastmcp", "fastmcp-stateless", "fastmcp-handshake", "mcp")
HANDSHAKE_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
STATELESS_VERSION = "2026-07-28"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _answer(send: Send, status: int, body: dict[str, Any] | None, **headers: str) -> None:
    content = json.dumps(body).encode() if body is not None else b""
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if body is not None:
        raw.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})


def _version_header(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"mcp-protocol-version":
            return bytes(value).decode("latin-1")
    return None


async def _request_id(receive: Receive) -> tuple[Any, list[Message]]:
    """Read the body (keeping the messages to replay) and return its JSON-RPC id."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    try:
        body = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        body = None
    return (body.get("id") if isinstance(body, dict) else None), messages


class OneEra:
    """Serve one era only; the other era's traffic gets what a one-era server answers."""

    def __init__(self, app: ASGIApp, era: str, path: str = "/mcp") -> None:
        self.app = app
        self.era = era
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        version = _version_header(scope)
        modern = version is not None and version not in HANDSHAKE_VERSIONS
        if self.era == "stateless" and not modern:
            if scope["method"] != "POST":
                await _answer(send, 405, None, allow="POST")
                return
            # The spec: a modern-only server names its versions in the error (400, -32022).
            request_id, _ = await _request_id(receive)
            error = {
                "code": -32022,
                "message": f"Unsupported protocol version: this server speaks only"
                f" {STATELESS_VERSION} (no initialize handshake)",
                "data": {"supported": [STATELESS_VERSION], "requested": version},
            }
            await _answer(send, 400, {"jsonrpc": "2.0", "id": request_id, "error": error})
            return
        if self.era == "handshake" and modern:
            # What pre-2026 servers answer to a version they do not know: 400, -32600.
            request_id, _ = await _request_id(receive)
            error = {
                "code": -32600,
                "message": "Bad Request: Unsupported protocol version: "
                f"{version} (supported: {', '.join(HANDSHAKE_VERSIONS)})",
            }
            await _answer(send, 400, {"jsonrpc": "2.0", "id": request_id, "error": error})
            return
        await self.app(scope, receive, send)


def _health(instance: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "instance": instance, "pid": os.getpid()})

    return health


def fastmcp_app(instance: str) -> ASGIApp:
    """FastMCP 4: the features every public client method needs, and ``/health``."""
    mcp = FastMCP(name="eras-fastmcp", instructions="Eras test server (FastMCP).")
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @mcp.tool(annotations=read_only)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool(annotations=read_only)
    async def progress(ctx: FastMCPContext, steps: int = 3) -> str:
        """Report `steps` progress notifications, then answer."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"{steps} steps"

    @mcp.tool(annotations=read_only)
    async def log(ctx: FastMCPContext, level: str, message: str) -> str:
        """Send one log message at `level`."""
        await ctx.log(message, level=level, logger_name="eras")  # type: ignore[arg-type]
        return message

    @mcp.resource("text://hello", mime_type="text/plain")
    def hello() -> str:
        """A fixed text resource."""
        return "hello"

    @mcp.resource("greeting://{name}", mime_type="text/plain")
    def greeting(name: str) -> str:
        """A templated resource."""
        return f"hello {name}"

    @mcp.prompt
    def greet(name: str) -> str:
        """A prompt with an argument."""
        return f"Greet {name}."

    mcp.custom_route("/health", methods=["GET"])(_health(instance))
    app: ASGIApp = mcp.http_app(path="/mcp", transport="http")
    return app


def mcp_app(instance: str) -> ASGIApp:
    """The official SDK 2.x server with the same features."""
    mcp = MCPServer(name="eras-mcp", instructions="Eras test server (official SDK).")
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @mcp.tool(annotations=read_only)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool(annotations=read_only)
    async def progress(ctx: MCPContext, steps: int = 3) -> str:
        """Report `steps` progress notifications, then answer."""
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"{steps} steps"

    @mcp.tool(annotations=read_only)
    async def log(ctx: MCPContext, level: str, message: str) -> str:
        """Send one log message at `level`."""
        await ctx.log(level, message, logger_name="eras")  # type: ignore[arg-type]
        return message

    @mcp.resource("text://hello", mime_type="text/plain")
    def hello() -> str:
        """A fixed text resource."""
        return "hello"

    @mcp.resource("greeting://{name}", mime_type="text/plain")
    def greeting(name: str) -> str:
        """A templated resource."""
        return f"hello {name}"

    @mcp.prompt()
    def greet(name: str) -> str:
        """A prompt with an argument."""
        return f"Greet {name}."

    mcp.custom_route("/health", methods=["GET"])(_health(instance))
    app: ASGIApp = mcp.streamable_http_app(streamable_http_path="/mcp")
    return app


def build_app(kind: str, instance: str) -> ASGIApp:
    if kind == "mcp":
        return mcp_app(instance)
    app = fastmcp_app(instance)
    if kind == "fastmcp-stateless":
        return OneEra(app, "stateless")
    if kind == "fastmcp-handshake":
        return OneEra(app, "handshake")
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A small MCP server in one of four setups.")
    parser.add_argument("--kind", choices=KINDS, default="fastmcp")
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--instance", default="eras")
    args = parser.parse_args(argv)
    parent = os.environ.get("MCP_EXIT_WITH_PARENT", "")
    if parent.isdigit():
        exit_with_parent(int(parent))
    sock = socket.socket(fileno=args.fd)
    app = build_app(args.kind, args.instance)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    )
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
