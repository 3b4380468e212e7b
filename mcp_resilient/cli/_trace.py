"""The ``-v`` trace: every HTTP exchange, SSE event and client event, with timings.

The trace wraps the httpx transport rather than using event hooks: a transport sees
the attempts that never get a response (connection refused, which is what a failover
trace must show) and can watch the response body as the client reads it, which is
where the SSE event ids are.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from mcp_resilient import Event

from ._output import Output

__all__ = ["TraceLogHandler", "TracingTransport"]

_BODY_PREVIEW = 300
_BODY_KEEP = 1 << 16  # enough of a JSON body to name the message it carries


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.1f} ms"


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_PREVIEW else text[:_BODY_PREVIEW] + "..."


def _rpc_label(message: Any) -> str:
    """What a JSON-RPC message is, in a few words."""
    if not isinstance(message, dict):
        return "non-JSON-RPC body"
    if "method" in message:
        kind = f"request id={message['id']}" if "id" in message else "notification"
        name = ""
        params = message.get("params")
        if isinstance(params, dict) and isinstance(params.get("name"), str):
            name = f" {params['name']}"
        return f"{message['method']}{name} ({kind})"
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        return f"error id={message.get('id')} code={error.get('code')} {error.get('message', '')}"
    if "result" in message:
        return f"result id={message.get('id')}"
    return "unknown JSON-RPC message"


def _parse(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class _TappedStream(httpx.AsyncByteStream):
    """Passes a response body through unchanged, reporting SSE events as they complete."""

    def __init__(
        self, inner: httpx.AsyncByteStream, out: Output, label: str, sse: bool, start: float
    ) -> None:
        self._inner = inner
        self._out = out
        self._label = label
        self._sse = sse
        self._start = start
        self._buffer = b""
        self._body = b""
        self._size = 0
        self._events = 0
        self._fields: dict[str, str] = {}
        self._data: list[str] = []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._size += len(chunk)
            if self._sse:
                self._feed(chunk)
            elif len(self._body) < _BODY_KEEP:
                self._body += chunk[: _BODY_KEEP - len(self._body)]
            yield chunk

    def _feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                self._dispatch()
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name in ("id", "retry", "event"):
                    self._fields[name] = value

    def _dispatch(self) -> None:
        if not self._fields and not self._data:
            return
        self._events += 1
        parts = [f"id={self._fields['id']}" if "id" in self._fields else "no id"]
        if "retry" in self._fields:
            parts.append(f"retry={self._fields['retry']}ms")
        data = "\n".join(self._data)
        parts.append(_rpc_label(_parse(data)) if data.strip() else "priming (no data)")
        self._out.trace(f"   sse event {' '.join(parts)}")
        if self._out.verbose > 1 and data.strip():
            self._out.trace(f"     {_preview(data)}")
        self._fields, self._data = {}, []

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._sse:
                self._dispatch()
                self._out.trace(
                    f"<- end of stream {self._label}: {self._events} events in {_ms(self._start)}"
                )
            elif self._size:
                message = _parse(self._body)
                label = f" ({_rpc_label(message)})" if message is not None else ""
                self._out.trace(
                    f"<- body of {self._label}: {self._size} bytes{label} in {_ms(self._start)}"
                )
                if self._out.verbose > 1:
                    self._out.trace(f"     {_preview(self._body.decode('utf-8', 'replace'))}")


class TracingTransport(httpx.AsyncBaseTransport):
    """Reports each request, its response or failure, and its body, to ``Output.trace``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, out: Output) -> None:
        self._inner = inner
        self._out = out

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        label = f"{request.method} {request.url}"
        what = ""
        body = request.content if request.method == "POST" else b""
        if body:
            what = f"  {_rpc_label(_parse(body))}"
        sent = [
            f"{name}={request.headers[header]}"
            for name, header in (
                ("session", "mcp-session-id"),
                ("protocol", "mcp-protocol-version"),
                ("last-event-id", "last-event-id"),
            )
            if header in request.headers
        ]
        self._out.trace(f"-> {label}{what}" + (f"  [{' '.join(sent)}]" if sent else ""))
        if self._out.verbose > 1 and body:
            self._out.trace(f"     {_preview(body.decode('utf-8', 'replace'))}")
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            self._out.trace(
                f"!! {label} failed after {_ms(start)}: {type(exc).__name__}: {exc or 'no detail'}"
            )
            raise
        content_type = response.headers.get("content-type", "")
        got = [f"content-type={content_type.split(';')[0]}" if content_type else ""]
        if "mcp-session-id" in response.headers:
            got.append(f"session={response.headers['mcp-session-id']}")
        self._out.trace(
            f"<- {response.status_code} {label} in {_ms(start)}  {' '.join(g for g in got if g)}"
        )
        sse = content_type.startswith("text/event-stream")
        if not isinstance(response.stream, httpx.AsyncByteStream):
            return response
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TappedStream(response.stream, self._out, label, sse, start),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class TraceLogHandler(logging.Handler):
    """The library's own log lines in the trace, minus the ones that repeat an event."""

    def __init__(self, out: Output) -> None:
        super().__init__(logging.DEBUG)
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], Event):
            return  # the on_event callback reports it already
        try:
            self._out.trace(
                f"   log {record.name} {record.levelname.lower()}: {record.getMessage()}"
            )
        except Exception:
            self.handleError(record)
