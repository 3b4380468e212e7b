"""What the fake saw: one record per HTTP request, kept so tests can assert on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from ._faults import same_endpoint

__all__ = ["RecordedRequest", "RequestLog", "ToolExecution"]

MessageKind = Literal["request", "notification", "response", "invalid"]
Era = Literal["handshake", "stateless"]


@dataclass(eq=False)
class RecordedRequest:
    """One HTTP request as the fake received it, including those a fault stopped.

    ``http_method`` is the HTTP verb; ``method`` is the JSON-RPC method of the body.
    ``status`` is the HTTP status answered, or None when no answer reached the client
    (connect error, lost response, timeout). ``faults`` names the faults that fired on it.
    """

    index: int
    http_method: str
    url: str
    endpoint: str | None
    headers: httpx.Headers
    content: bytes
    body: Any
    status: int | None = None
    faults: list[str] = field(default_factory=list)
    era: Era | None = None
    """Which era the fake served it in (None: refused before it got that far, or a GET)."""

    def _header(self, name: str) -> str | None:
        # ``httpx.Headers.get`` is typed ``Any``; this pins the type once for the accessors below.
        value: str | None = self.headers.get(name)
        return value

    @property
    def session_id(self) -> str | None:
        """The ``Mcp-Session-Id`` header the client sent."""
        return self._header("mcp-session-id")

    @property
    def protocol_version(self) -> str | None:
        """The ``MCP-Protocol-Version`` header the client sent."""
        return self._header("mcp-protocol-version")

    @property
    def method_header(self) -> str | None:
        """The ``Mcp-Method`` header (stateless era)."""
        return self._header("mcp-method")

    @property
    def name_header(self) -> str | None:
        """The ``Mcp-Name`` header as sent (stateless era; may be ``=?base64?...?=``)."""
        return self._header("mcp-name")

    @property
    def meta(self) -> dict[str, Any] | None:
        """The request's ``params._meta`` (stateless era: version, capabilities, client info)."""
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else None

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` header (a resumption GET)."""
        return self._header("last-event-id")

    @property
    def method(self) -> str | None:
        """The JSON-RPC method of the body (None for responses and non-POSTs)."""
        if isinstance(self.body, dict):
            method = self.body.get("method")
            return method if isinstance(method, str) else None
        return None

    @property
    def id(self) -> Any:
        """The JSON-RPC id of the body, if any."""
        return self.body.get("id") if isinstance(self.body, dict) else None

    @property
    def params(self) -> dict[str, Any]:
        """The JSON-RPC params (empty when absent)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("params"), dict):
            params: dict[str, Any] = self.body["params"]
            return params
        return {}

    @property
    def tool_name(self) -> str | None:
        """For ``tools/call``: the tool's name."""
        if self.method != "tools/call":
            return None
        name = self.params.get("name")
        return name if isinstance(name, str) else None

    @property
    def arguments(self) -> dict[str, Any]:
        """For ``tools/call``: the arguments (empty when absent)."""
        arguments = self.params.get("arguments")
        return arguments if isinstance(arguments, dict) else {}

    @property
    def kind(self) -> MessageKind | None:
        """What the JSON-RPC body is; None for bodiless requests (GET, DELETE)."""
        if self.body is None and not self.content:
            return None
        if not isinstance(self.body, dict):
            return "invalid"
        if "method" in self.body:
            return "request" if "id" in self.body else "notification"
        if "id" in self.body and ("result" in self.body or "error" in self.body):
            return "response"
        return "invalid"

    def __repr__(self) -> str:
        what = self.method or self.kind or ""
        if self.tool_name:
            what += f" {self.tool_name}"
        fired = f" faults={self.faults}" if self.faults else ""
        who = "stateless" if self.era == "stateless" else f"session={self.session_id}"
        return (
            f"<RecordedRequest #{self.index} {self.http_method} {self.url} {what}"
            f" {who} -> {self.status}{fired}>"
        )


class RequestLog(list[RecordedRequest]):
    """The list of recorded requests, with filters for the usual questions."""

    def for_method(
        self,
        method: str | None = None,
        *,
        tool: str | None = None,
        http_method: str | None = None,
        url: str | None = None,
    ) -> list[RecordedRequest]:
        """Requests with this JSON-RPC method / tool name / HTTP verb / endpoint URL."""
        if tool is not None and method is None:
            method = "tools/call"
        return [
            r
            for r in self
            if (method is None or r.method == method)
            and (tool is None or r.tool_name == tool)
            and (http_method is None or r.http_method == http_method.upper())
            and (url is None or same_endpoint(r.endpoint, url))
        ]

    @property
    def methods(self) -> list[str | None]:
        """The JSON-RPC method (or HTTP verb for bodiless requests) of each request, in order."""
        return [r.method or (r.http_method if r.kind is None else None) for r in self]

    @property
    def last(self) -> RecordedRequest:
        """The most recent request."""
        if not self:
            raise LookupError("no request was recorded")
        return self[-1]


@dataclass(frozen=True)
class ToolExecution:
    """One run of a tool function (only calls that actually executed)."""

    name: str
    arguments: dict[str, Any]
    session_id: str | None
    request_id: Any
    endpoint: str
