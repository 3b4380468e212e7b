"""A tiny MCP server on real loopback sockets, for limits respx cannot show.

respx answers inside httpx's transport, so connection-pool limits and the cost of real
HTTP round trips never appear. This server runs uvicorn in its own thread (its own event
loop) on 127.0.0.1 with an ephemeral port, so the client under test competes for real
connections exactly as it would against a remote server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

SESSION = "loop-1"

CallHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
ListenBody = Callable[[], AsyncIterator[bytes]]


class LoopbackMCP:
    """Answers initialize, tools/call (via ``on_call``), GET (via ``listen``) and replies."""

    def __init__(self) -> None:
        self.url = ""
        self.on_call: CallHandler = self._default_call
        self.listen: ListenBody | None = None
        self.reply_delay = 0.0
        self.replies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def _default_call(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": "ok"}]}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.loop = asyncio.get_running_loop()
        method = scope["method"]
        if method == "GET":
            if self.listen is None:
                await _respond(send, 405, b"")
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            async for chunk in self.listen():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if method == "DELETE":
            await _respond(send, 200, b"")
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(raw)
        if "method" not in body or "id" not in body:
            if "method" not in body:
                if self.reply_delay:
                    await asyncio.sleep(self.reply_delay)
                with self.lock:
                    self.replies.append(body)
            await _respond(send, 202, b"")
            return
        rid = body["id"]
        if body["method"] == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "loopback", "version": "1"},
            }
            await _respond_json(send, rid, result, [(b"mcp-session-id", SESSION.encode())])
            return
        if body["method"] == "tools/list":
            await _respond_json(send, rid, {"tools": []}, [])
            return
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            result = await self.on_call(body)
        finally:
            with self.lock:
                self.in_flight -= 1
        await _respond_json(send, rid, result, [])


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(
    send: Any, rid: Any, result: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


@contextmanager
def serve(app: LoopbackMCP) -> Iterator[LoopbackMCP]:
    """Run ``app`` on 127.0.0.1:<free port> in a thread until the block ends."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        limit_concurrency=None,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="loopback-mcp", daemon=True)
    thread.start()
    give_up = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > give_up or not thread.is_alive():
            raise RuntimeError("loopback MCP server did not start within 10 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    app.url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(10)
