"""A deliberately tiny MCP-over-HTTP speaker built on plain httpx.

Rig tests check the servers with this, not with ``mcp_resilient``: a bug in the client
under test must not hide (or fake) a broken rig. It handles only complete responses
(the server ends each POST's SSE stream after the answer).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

LATEST_HANDSHAKE_VERSION = "2025-11-25"
ACCEPT_BOTH = "application/json, text/event-stream"


@dataclass(frozen=True)
class SseEvent:
    """One dispatched SSE event (fields as on the wire)."""

    data: str
    id: str | None = None
    event: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def iter_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Turn SSE lines into events as they complete (comments dropped).

    Events with only an id/retry and empty data (priming events) are kept: tests look
    at them. Works on a live stream (``response.iter_lines()``) as well as on text.
    """
    data: list[str] = []
    fields: dict[str, str] = {}
    for line in itertools.chain(lines, [""]):
        if line == "":
            if data or fields:
                retry = fields.get("retry")
                yield SseEvent(
                    data="\n".join(data),
                    id=fields.get("id"),
                    event=fields.get("event"),
                    retry=int(retry) if retry and retry.isdigit() else None,
                )
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("id", "event", "retry"):
            fields[name] = value


def parse_sse(text: str) -> list[SseEvent]:
    """All events of a complete ``text/event-stream`` body."""
    return list(iter_sse(text.splitlines()))


@dataclass
class RawReply:
    """The JSON-RPC response to one request, with everything that came with it."""

    message: dict[str, Any]
    events: list[SseEvent]
    response: httpx.Response

    @property
    def result(self) -> dict[str, Any]:
        if "result" not in self.message:
            raise AssertionError(f"expected a result, got {self.message}")
        result: dict[str, Any] = self.message["result"]
        return result

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "method" in m and "id" not in m]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [e.json() for e in self.events if e.data.strip()]


class RawMcpSession:
    """Handshake-era session: ``initialize``, then requests carrying the session id."""

    def __init__(
        self,
        url: str,
        client: httpx.Client,
        protocol_version: str = LATEST_HANDSHAKE_VERSION,
    ) -> None:
        self.url = url
        self.client = client
        self.protocol_version = protocol_version
        self.session_id: str | None = None
        self._ids = itertools.count(1)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def post(self, message: dict[str, Any]) -> httpx.Response:
        return self.client.post(self.url, headers=self.headers(), json=message)

    def request(self, method: str, params: dict[str, Any] | None = None) -> RawReply:
        """Send one request; return its response (JSON or the SSE stream's events)."""
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        response = self.post(message)
        if response.status_code != 200:
            raise AssertionError(f"{method}: HTTP {response.status_code} {response.text[:300]!r}")
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            events = parse_sse(response.text)
        else:
            events = [SseEvent(data=response.text)]
        for event in events:
            if event.data.strip():
                payload = event.json()
                if payload.get("id") == request_id and "method" not in payload:
                    return RawReply(payload, events, response)
        raise AssertionError(f"{method}: no response for id {request_id} in {response.text!r}")

    def initialize(self) -> RawReply:
        """``initialize`` + ``notifications/initialized``; remembers the session id."""
        reply = self.request(
            "initialize",
            {
                "protocolVersion": self.protocol_version,
                "capabilities": {},
                "clientInfo": {"name": "rig-raw", "version": "0"},
            },
        )
        self.session_id = reply.response.headers.get("mcp-session-id")
        if not self.session_id:
            raise AssertionError("initialize answered without Mcp-Session-Id")
        self.protocol_version = reply.result["protocolVersion"]
        sent = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if sent.status_code != 202:
            raise AssertionError(f"initialized: HTTP {sent.status_code}")
        return reply

    def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        progress_token: str | int | None = None,
    ) -> RawReply:
        params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
        if progress_token is not None:
            params["_meta"] = {"progressToken": progress_token}
        return self.request("tools/call", params)

    def structured(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call a tool and unwrap its structured content (``{"result": x}`` → ``x``)."""
        result = self.call_tool(name, arguments).result
        if result.get("isError"):
            raise AssertionError(f"{name} failed: {result}")
        content = result["structuredContent"]
        wrapped = result.get("_meta", {}).get("fastmcp", {}).get("wrap_result")
        return content["result"] if wrapped else content
