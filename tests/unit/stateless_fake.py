"""A scripted 2026-07-28 (stateless) MCP endpoint on respx, for wire-level era tests.

It validates what a real stateless server validates (version header against ``_meta``,
``Mcp-Method``, ``Mcp-Name``) and answers like one; tests script the rest per method.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from tests.unit.conftest import ScriptedEndpoint

VERSION = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_INFO = "io.modelcontextprotocol/clientInfo"


def result(rid: Any, body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, json={"jsonrpc": "2.0", "id": rid, "result": {"resultType": "complete", **body}}
    )


def error(
    rid: Any, code: int, message: str, *, status: int = 400, data: Any = None
) -> httpx.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return httpx.Response(status, json={"jsonrpc": "2.0", "id": rid, "error": err})


def decode(value: str) -> str:
    if value.startswith("=?base64?") and value.endswith("?="):
        return base64.b64decode(value[len("=?base64?") : -2]).decode()
    return value


class StatelessFake(ScriptedEndpoint):
    """Answers stateless POSTs by method; 405 to GET and DELETE; records everything."""

    def __init__(self, url: str, *, supported: tuple[str, ...] = (VERSION,)) -> None:
        super().__init__(url)
        self.supported = list(supported)
        self.capabilities: dict[str, Any] = {"tools": {"listChanged": True}}
        self.ttl_ms = 60_000
        self.runs: dict[str, int] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method != "POST":
            return httpx.Response(405)
        body = json.loads(request.content)
        rid, method = body.get("id"), body.get("method")
        params = body.get("params") or {}
        meta = params.get("_meta") or {}
        header = request.headers.get("mcp-protocol-version")
        if header is None or meta.get(META_VERSION) != header:
            return error(rid, -32020, "MCP-Protocol-Version header missing or not the _meta one")
        if header not in self.supported:
            data = {"supported": self.supported, "requested": header}
            return error(rid, -32022, "Unsupported protocol version", data=data)
        if request.headers.get("mcp-method") != method:
            return error(rid, -32020, "Mcp-Method does not match the body")
        named = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}.get(method)
        if named and decode(request.headers.get("mcp-name", "")) != params.get(named):
            return error(rid, -32020, "Mcp-Name does not match the body")
        return await self.answer(method, body, request)

    def default(self, method: str, body: dict[str, Any]) -> httpx.Response:
        rid = body["id"]
        params = body.get("params") or {}
        if method == "server/discover":
            return result(
                rid,
                {
                    "supportedVersions": self.supported,
                    "capabilities": self.capabilities,
                    "ttlMs": 0,
                    "cacheScope": "public",
                    "_meta": {
                        "io.modelcontextprotocol/serverInfo": {"name": "fake", "version": "2"}
                    },
                    "instructions": "be nice",
                },
            )
        if method == "tools/list":
            return result(rid, {"tools": self.tools, "ttlMs": self.ttl_ms, "cacheScope": "private"})
        if method == "tools/call":
            name = params["name"]
            self.runs[name] = self.runs.get(name, 0) + 1
            args = params.get("arguments") or {}
            total = sum(v for v in args.values() if isinstance(v, int) and not isinstance(v, bool))
            return result(
                rid,
                {
                    "content": [{"type": "text", "text": str(total)}],
                    "structuredContent": {"result": total},
                },
            )
        if method == "resources/read":
            return result(
                rid,
                {
                    "contents": [{"uri": params["uri"], "text": "x"}],
                    "ttlMs": 0,
                    "cacheScope": "private",
                },
            )
        if method == "prompts/get":
            return result(rid, {"messages": []})
        return error(rid, -32601, f"Method not found: {method}", status=404)
