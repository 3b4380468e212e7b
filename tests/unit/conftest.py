"""A scripted MCP endpoint on respx, for tests that pin exact wire behaviour.

Wire tests need full control of every byte the "server" answers, so this fake is
deliberately tiny: a method-to-answer table plus a record of what the client sent.
"""

from __future__ import annotations

import abc
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

URL = "http://mcp.test/mcp"
SESSION = "sess-1"

Answer = Callable[[dict[str, Any], httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def rpc_result(rid: Any, result: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.Response(
        200, json={"jsonrpc": "2.0", "id": rid, "result": result}, headers=headers
    )


def rpc_error(rid: Any, code: int, message: str, data: Any = None) -> httpx.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": rid, "error": error})


def sse_event(data: Any = None, *, id: str | None = None, retry: int | None = None) -> str:
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if retry is not None:
        lines.append(f"retry: {retry}")
    if data is not None:
        text = data if isinstance(data, str) else json.dumps(data)
        lines.extend(f"data: {line}" for line in text.split("\n"))
    else:
        lines.append("data: ")
    return "\n".join(lines) + "\n\n"


def sse_response(*events: str, chunks: AsyncIterator[bytes] | None = None) -> httpx.Response:
    headers = {"content-type": "text/event-stream"}
    if chunks is not None:
        return httpx.Response(200, headers=headers, content=chunks)
    return httpx.Response(200, headers=headers, content="".join(events).encode())


class ScriptedEndpoint(abc.ABC):
    """What the fakes share: a method-to-answer table over a default, a record of requests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[httpx.Request] = []
        self.answers: dict[str, Answer] = {}
        self.tools: list[dict[str, Any]] = [
            {
                "name": "add",
                "inputSchema": {"type": "object"},
                "annotations": {"readOnlyHint": True},
            }
        ]

    def on(self, method: str, answer: Answer) -> None:
        self.answers[method] = answer

    def posts(self, method: str | None = None) -> list[tuple[httpx.Request, dict[str, Any]]]:
        out = []
        for request in self.requests:
            if request.method != "POST":
                continue
            body = json.loads(request.content)
            if method is None or body.get("method") == method:
                out.append((request, body))
        return out

    async def answer(
        self, method: str, body: dict[str, Any], request: httpx.Request
    ) -> httpx.Response:
        """The answer a test scripted for ``method``, else the fake's own default."""
        answer = self.answers.get(method)
        if answer is not None:
            got = answer(body, request)
            return await got if inspect.isawaitable(got) else got
        return self.default(method, body)

    @abc.abstractmethod
    def default(self, method: str, body: dict[str, Any]) -> httpx.Response:
        """How this fake answers a method no test scripted."""


class FakeServer(ScriptedEndpoint):
    """Answers POSTs by JSON-RPC method; records every request the client made."""

    def __init__(self) -> None:
        super().__init__(URL)
        self.session_id: str | None = SESSION
        self.version = "2025-11-25"
        self.client_messages: list[dict[str, Any]] = []
        self.get_answer: Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]] = (
            lambda request: httpx.Response(405)
        )
        self.delete_status = 200

    # -- what the client sent -----------------------------------------------------

    def of_method(self, http_method: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == http_method]

    # -- answering ----------------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET":
            got = self.get_answer(request)
            return await got if inspect.isawaitable(got) else got
        if request.method == "DELETE":
            return httpx.Response(self.delete_status)
        body = json.loads(request.content)
        if "method" not in body or "id" not in body:
            self.client_messages.append(body)
            return httpx.Response(202)
        return await self.answer(body["method"], body, request)

    def default(self, method: str, body: dict[str, Any]) -> httpx.Response:
        rid = body["id"]
        if method == "initialize":
            headers = {"mcp-session-id": self.session_id} if self.session_id else {}
            return rpc_result(
                rid,
                {
                    "protocolVersion": self.version,
                    "capabilities": {"tools": {}, "logging": {}},
                    "serverInfo": {"name": "fake", "version": "1.0"},
                },
                **headers,
            )
        if method == "tools/list":
            return rpc_result(rid, {"tools": self.tools})
        if method == "tools/call":
            args = body["params"].get("arguments", {})
            total = sum(v for v in args.values() if isinstance(v, int))
            return rpc_result(
                rid,
                {
                    "content": [{"type": "text", "text": str(total)}],
                    "structuredContent": {"result": total},
                },
            )
        if method == "ping":
            return rpc_result(rid, {})
        return rpc_error(rid, -32601, f"no method {method}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=fake)
        yield fake


HTTP_PATHS = ("lean", "httpx")
"""The two transport paths every wire test runs on: below httpx (a client that owns its
HTTP stack) and httpx (a caller's client, httpx.Auth, proxies, hooks). With respx's
default mocker both reach the mock; below httpx that is through httpcore."""

SOCKET_PATHS = ("lean", "httpcore", "httpx")
"""For tests on real loopback sockets, where the lean path has two stacks of its own: our
HTTP/1.1 connections (the default for plain HTTP) and httpcore."""


def _set_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    path: str = request.param
    monkeypatch.setenv("MCP_RESILIENT_HTTP_PATH", path)
    return path


@pytest.fixture(params=HTTP_PATHS)
def http_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once per transport path (``MCP_RESILIENT_HTTP_PATH``)."""
    return _set_path(request, monkeypatch)


@pytest.fixture(params=SOCKET_PATHS)
def socket_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a real-socket test once per stack, our own HTTP/1.1 included."""
    return _set_path(request, monkeypatch)


def wire_transport(path: str, http: httpx.AsyncClient, url: str) -> Any:
    """What an ``HTTPWire`` sends through on ``path``: our httpcore pool, or ``http``."""
    from mcp_resilient._transports import CoreTransport, EndpointSlots

    if path == "lean":
        return CoreTransport([url], EndpointSlots(None))
    return http
