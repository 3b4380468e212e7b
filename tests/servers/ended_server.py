"""A real FastMCP 4 server whose answers end without their response, on request (issue 17).

The tool really runs (FastMCP handles the request as usual); only its answer is replaced,
by one of the ways an answer ends early in production: an SSE answer with no event (what
sse-starlette 3.7.1 and later send at shutdown), SSE events without ids, an empty or cut
JSON body, a 200 with no body. A call asks for it with the argument ``end_as``, and only
its first try (by ``call_id``) is cut, so a re-send gets the real answer.

    python -m tests.servers.ended_server --fd 3 --instance ended
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastmcp import FastMCP
from mcp_types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse

from examples.stateful_server import exit_with_parent
from tests.servers.eras_server import ASGIApp, Message, Receive, Scope, Send

FRAMINGS = ("sse-no-events", "sse-events-without-id", "json-empty", "json-cut-short", "200-no-body")


class EndEarly:
    """Runs the request, then sends ``end_as`` instead of the real answer (once per call)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cut: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(m.get("body", b"") for m in messages)
        pending = list(messages)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        framing, key, request_id = _wanted(body)
        if framing not in FRAMINGS or key in self.cut:
            await self.app(scope, replay, send)
            return
        self.cut.add(key)

        async def swallow(_message: Message) -> None:
            return None

        await self.app(scope, replay, swallow)  # the tool runs; its answer is dropped
        await _send_framing(send, str(framing), request_id)


def _wanted(body: bytes) -> tuple[Any, str, Any]:
    try:
        message = json.loads(body)
        arguments = message["params"]["arguments"]
        return arguments.get("end_as"), str(arguments.get("call_id")), message.get("id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, "", None


async def _send_framing(send: Send, framing: str, request_id: Any) -> None:
    headers: list[tuple[bytes, bytes]] = []
    content = b""
    if framing.startswith("sse"):
        headers.append((b"content-type", b"text/event-stream"))
        if framing == "sse-events-without-id":
            content = b": keep-alive\n\ndata: \n\n"
    elif framing.startswith("json"):
        headers.append((b"content-type", b"application/json"))
        if framing == "json-cut-short":
            whole = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": {"content": []}})
            content = whole.encode()[: len(whole) // 2]
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def build_app(instance: str) -> ASGIApp:
    mcp = FastMCP(name="ended", instructions="Answers that end early (tests).")
    runs: dict[str, int] = {}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int, call_id: str = "", end_as: str = "") -> int:
        """Add two integers (read-only: safe to re-send)."""
        runs[call_id] = runs.get(call_id, 0) + 1
        return a + b

    @mcp.tool
    def bump(call_id: str, end_as: str = "") -> int:
        """Not idempotent: counts its runs under ``call_id``."""
        runs[call_id] = runs.get(call_id, 0) + 1
        return runs[call_id]

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    def runs_of(call_id: str) -> int:
        """How many times a call ran."""
        return runs.get(call_id, 0)

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "instance": instance, "pid": os.getpid()})

    mcp.custom_route("/health", methods=["GET"])(health)
    app: ASGIApp = mcp.http_app(path="/mcp", transport="http")
    return EndEarly(app)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--instance", default="ended")
    args = parser.parse_args(argv)
    parent = os.environ.get("MCP_EXIT_WITH_PARENT", "")
    if parent.isdigit():
        exit_with_parent(int(parent))
    sock = socket.socket(fileno=args.fd)
    server = uvicorn.Server(
        uvicorn.Config(build_app(args.instance), log_level="warning", lifespan="on")
    )
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
