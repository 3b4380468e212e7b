"""Shared helpers for the tests of mcp_resilient.testing: raw JSON-RPC over plain httpx."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mcp_resilient.testing import SSEEvent, parse_sse

ACCEPT = "application/json, text/event-stream"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Wire:
    """A minimal hand-rolled MCP client: just enough to drive the fake on the wire."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._next_id = 0

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"accept": ACCEPT, "content-type": "application/json"}
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
        headers.update(extra or {})
        return headers

    async def post(
        self, body: Any, *, url: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(
            url or self.url, content=json.dumps(body), headers=self.headers(headers)
        )

    def request_body(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id(), "method": method}
        if params is not None:
            body["params"] = params
        return body

    async def initialize(
        self, version: str = "2025-11-25", *, url: str | None = None
    ) -> httpx.Response:
        self.session_id = None
        self.protocol_version = None
        params = {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "wire-test", "version": "1"},
        }
        response = await self.post(self.request_body("initialize", params), url=url)
        if response.status_code == 200:
            self.session_id = response.headers.get("mcp-session-id")
            self.protocol_version = answer(response)["result"]["protocolVersion"]
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await self.post(initialized, url=url)).status_code == 202
        return response

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, url: str | None = None
    ) -> httpx.Response:
        return await self.post(self.request_body(method, params), url=url)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, url: str | None = None
    ) -> dict[str, Any]:
        """Send a request; return its JSON-RPC response message."""
        response = await self.request(method, params, url=url)
        assert response.status_code == 200, response.text
        return answer(response)

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *, url: str | None = None
    ) -> dict[str, Any]:
        return await self.call("tools/call", {"name": name, "arguments": arguments or {}}, url=url)

    async def get(self, *, url: str | None = None, **headers: str) -> httpx.Response:
        """A GET (listen stream or resumption); read it with ``client.stream`` semantics."""
        request = self.client.build_request(
            "GET", url or self.url, headers=self.headers({"accept": "text/event-stream", **headers})
        )
        return await self.client.send(request, stream=True)

    @staticmethod
    def events(response: httpx.Response) -> list[SSEEvent]:
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.text)

    @staticmethod
    def messages(response: httpx.Response) -> list[dict[str, Any]]:
        return messages(response)

    @staticmethod
    def answer(response: httpx.Response) -> dict[str, Any]:
        return answer(response)


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a JSON or SSE answer."""
    if response.headers["content-type"].startswith("application/json"):
        return [response.json()]
    return [e.json() for e in parse_sse(response.text) if e.data]


def answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response (the message with an id and a result or error)."""
    found = [m for m in messages(response) if "result" in m or "error" in m]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="session")
def ssl_context() -> ssl.SSLContext:
    # Building one per client costs ~50 ms (loading CA certificates); the fakes need none.
    return ssl.create_default_context()


@pytest.fixture
async def http(ssl_context: ssl.SSLContext) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=ssl_context) as client:
        yield client


@pytest.fixture
def wire(http: httpx.AsyncClient, mcp_mock: Any) -> Wire:
    """A raw client for the ``mcp_mock`` server."""
    return Wire(http, mcp_mock.url)


@pytest.fixture
def make_wire(http: httpx.AsyncClient) -> Any:
    """Factory: a raw client for any URL."""
    return lambda url: Wire(http, url)
