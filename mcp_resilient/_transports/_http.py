"""The Streamable HTTP wire: POST, GET and DELETE on one MCP endpoint.

This module knows HTTP and SSE framing, nothing about sessions or protocol eras:
the era layer decides which headers go on each request. Every response is turned
into a stream of JSON-RPC message dicts, or into a typed error.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .._sse import iter_events
from ..errors import (
    ConnectError,
    HTTPStatusError,
    ProtocolError,
    SessionExpiredError,
    StreamEndedError,
    TransportError,
)
from ._base import Transport, WireResponse
from ._bounded import ACCEPT_ENCODING
from ._bounded import MAX_CODINGS as _MAX_CODINGS
from ._bounded import Inflater as _Inflater
from ._bounded import inflate as _inflate
from ._httpx import HttpxTransport

__all__ = [
    "POST_ACCEPT",
    "SSE_ACCEPT",
    "HTTPWire",
    "SeenIds",
    "StreamCursor",
    "ended_without_answer",
]

logger = logging.getLogger("mcp_resilient.wire")

POST_ACCEPT = "application/json, text/event-stream"
SSE_ACCEPT = "text/event-stream"
_JSON_CONTENT_TYPE = "application/json"
_MAX_RETRY_AFTER = 24 * 3600.0  # a longer Retry-After is not taken at its word


class SeenIds:
    """The most recent event ids of one stream, to drop replays; bounded for long streams.

    A replay resends events *after* the ``Last-Event-ID`` we sent, so only recent ids can
    come back; the listen stream lives as long as the session and must not grow forever.
    """

    __slots__ = ("_ids", "_order", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        if event_id in self._ids:
            return
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.limit:
            self._ids.discard(self._order.popleft())


def header_safe_event_id(event_id: str) -> bool:
    """Whether an event id can go back to the server as ``Last-Event-ID``.

    SSE allows any text in an id, but an HTTP header takes visible ASCII (and inner
    spaces) only; an id that does not fit is never sent back.
    """
    return event_id.isascii() and event_id.isprintable() and event_id.strip() == event_id


@dataclass(slots=True)
class StreamCursor:
    """What one exchange taught us: response headers, and where its SSE stream stands.

    ``last_event_id`` only ever holds an id that is safe to send as ``Last-Event-ID``.
    """

    last_event_id: str | None = None
    retry_ms: int | None = None
    events: int = 0
    headers: Mapping[str, str] | None = None  # the last response's; ask with lower-case names
    seen_ids: SeenIds = field(default_factory=lambda: SeenIds())
    warned_unsafe_id: bool = False


def _retry_after(response: WireResponse) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            from datetime import UTC, datetime

            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None  # not a date, a naive one, or a year datetime cannot hold
    if not math.isfinite(seconds) or seconds > _MAX_RETRY_AFTER:
        return None
    return max(0.0, seconds)


def ended_without_answer(what: str, *, endpoint: str, session_id: str | None) -> StreamEndedError:
    """An answer that ended before its response: the request went out, so it may have run.

    In doubt, like a cut connection (a server shutting down ends open answers cleanly),
    never a protocol error; the recovery layer decides whether to re-send.
    """
    return StreamEndedError(
        f"{what} ended without its response: the server accepted the request and then went"
        " away, so it may have run",
        endpoint=endpoint,
        session_id=session_id,
    )


def _cut_short(exc: ValueError) -> bool:
    """A JSON parse that failed at the end of the input: the body was cut, not malformed."""
    if not isinstance(exc, json.JSONDecodeError):
        return False
    return exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string")


def _decode_message(
    raw: str | bytes, *, endpoint: str, session_id: str | None, whole_body: bool = False
) -> dict[str, Any]:
    """One JSON-RPC message. ``whole_body``: ``raw`` is a JSON answer's body, so an empty
    or cut-short one is an answer that ended early (an SSE event's data is whole)."""
    try:
        message = json.loads(raw)
    except ValueError as exc:
        if whole_body and _cut_short(exc):
            raise ended_without_answer(
                f"the JSON answer ({len(raw)} bytes, cut short)",
                endpoint=endpoint,
                session_id=session_id,
            ) from None
        raise ProtocolError(
            f"server sent malformed JSON ({exc.__class__.__name__}: {exc})",
            endpoint=endpoint,
            session_id=session_id,
        ) from None
    except RecursionError:
        raise ProtocolError(
            "server sent JSON nested too deeply to decode",
            endpoint=endpoint,
            session_id=session_id,
            hint="The server's answer is broken or hostile",
        ) from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        kind = "a batch" if isinstance(message, list) else type(message).__name__
        raise ProtocolError(
            f"server sent a body that is not one JSON-RPC 2.0 message (got {kind})",
            endpoint=endpoint,
            session_id=session_id,
        )
    return message


class HTTPWire:
    """Sends MCP messages to one endpoint and yields the messages that come back."""

    def __init__(
        self,
        client: httpx.AsyncClient | Transport,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        max_message_bytes: int,
    ) -> None:
        if isinstance(client, httpx.AsyncClient):
            client = HttpxTransport(client, auth=auth)
        elif auth is not None:
            raise ValueError("auth= goes with an httpx.AsyncClient; a transport carries its own")
        self.transport: Transport = client
        self.url = url
        self.base_headers = dict(headers or {})
        self.max_message_bytes = max_message_bytes

    # -- sending -----------------------------------------------------------------

    async def _send(
        self, method: str, headers: dict[str, str], content: bytes | None, session_id: str | None
    ) -> WireResponse:
        try:
            return await self.transport.send(method, self.url, headers, content)
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.UnsupportedProtocol,
        ) as exc:
            detail = str(exc)
            hint = "Check that the server is running and the URL is right"
            if "Too many open files" in detail:
                hint = (
                    "This process ran out of file descriptors: raise `ulimit -n`, or lower"
                    " max_connections (see the connection limits docs)"
                )
            raise ConnectError(
                f"could not connect for {method} ({exc.__class__.__name__}: {detail or 'no detail'})",
                endpoint=self.url,
                session_id=session_id,
                hint=hint,
            ) from exc
        except httpx.RequestError as exc:
            raise TransportError(
                f"{method} failed after it was sent ({exc.__class__.__name__}: {exc or 'no detail'})",
                endpoint=self.url,
                session_id=session_id,
            ) from exc

    def _headers(self, accept: str, extra: Mapping[str, str]) -> dict[str, str]:
        headers = dict(self.base_headers)
        headers.update(extra)
        headers["Accept"] = accept
        headers["Accept-Encoding"] = ACCEPT_ENCODING
        return headers

    async def post(
        self,
        message: dict[str, Any],
        extra_headers: Mapping[str, str],
        *,
        session_id: str | None,
        cursor: StreamCursor | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POST one message; yield what the server sends back (nothing for a 202)."""
        headers = self._headers(POST_ACCEPT, extra_headers)
        headers["Content-Type"] = _JSON_CONTENT_TYPE
        body = json.dumps(message, separators=(",", ":")).encode()
        response = await self._send("POST", headers, body, session_id)
        if cursor is not None:
            cursor.headers = response.headers
        try:
            is_request = "id" in message and "method" in message
            status = response.status_code
            if status == 202:
                if is_request:
                    raise ProtocolError(
                        f"server answered 202 Accepted to the request {message['method']!r};"
                        " a request must get a JSON or SSE response",
                        endpoint=self.url,
                        session_id=session_id,
                    )
                return
            if status != 200:
                await self._raise_status(response, "POST", session_id)
            if not is_request:
                # A 200 to a notification or response: tolerated, body ignored.
                return
            content_type = response.headers.get("content-type", "")
            if content_type.startswith(SSE_ACCEPT):
                async for incoming in self._read_sse(
                    response, session_id, cursor or StreamCursor()
                ):
                    yield incoming
            elif content_type.startswith(_JSON_CONTENT_TYPE):
                raw = await self._read_capped(response, session_id)
                yield _decode_message(
                    raw, endpoint=self.url, session_id=session_id, whole_body=True
                )
            else:
                if not (await self._read_capped(response, session_id)).strip():
                    raise ended_without_answer(
                        "a 200 answer with no body", endpoint=self.url, session_id=session_id
                    )
                raise ProtocolError(
                    f"server answered with content type {content_type or 'none'!r};"
                    " expected application/json or text/event-stream",
                    endpoint=self.url,
                    session_id=session_id,
                )
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise TransportError(
                f"connection broke while reading the answer to POST ({exc.__class__.__name__})",
                endpoint=self.url,
                session_id=session_id,
            ) from exc
        finally:
            await response.aclose()

    async def get_stream(
        self,
        extra_headers: Mapping[str, str],
        *,
        session_id: str | None,
        cursor: StreamCursor,
    ) -> AsyncGenerator[dict[str, Any], None] | None:
        """Open a GET stream (listen or resume). ``None`` means the server answered 405."""
        headers = self._headers(SSE_ACCEPT, extra_headers)
        if cursor.last_event_id is not None and header_safe_event_id(cursor.last_event_id):
            headers["Last-Event-ID"] = cursor.last_event_id
        response = await self._send("GET", headers, None, session_id)
        if response.status_code == 405:
            await response.aclose()
            return None
        if response.status_code != 200:
            try:
                await self._raise_status(response, "GET", session_id)
            finally:
                await response.aclose()
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith(SSE_ACCEPT):
            await response.aclose()
            raise ProtocolError(
                f"GET stream answered with content type {content_type or 'none'!r},"
                " expected text/event-stream",
                endpoint=self.url,
                session_id=session_id,
            )
        return self._stream_body(response, session_id, cursor)

    async def _stream_body(
        self, response: WireResponse, session_id: str | None, cursor: StreamCursor
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async for incoming in self._read_sse(response, session_id, cursor):
                yield incoming
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise TransportError(
                f"SSE stream broke ({exc.__class__.__name__})",
                endpoint=self.url,
                session_id=session_id,
            ) from exc
        finally:
            await response.aclose()

    async def delete(self, extra_headers: Mapping[str, str], *, session_id: str | None) -> int:
        """Send DELETE to end the session; returns the status (405 means not allowed)."""
        headers = dict(self.base_headers)
        headers.update(extra_headers)
        headers["Accept-Encoding"] = ACCEPT_ENCODING
        response = await self._send("DELETE", headers, None, session_id)
        await response.aclose()
        return response.status_code

    # -- reading -----------------------------------------------------------------

    def _stages(self, response: WireResponse, session_id: str | None) -> list[_Inflater]:
        """The decoders for the response's Content-Encoding, in the order to apply them."""
        header = response.headers.get("content-encoding")
        if not header:
            return []
        codings = [c.strip().lower() for c in header.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        unknown = [c for c in codings if c not in ("gzip", "x-gzip", "deflate")]
        if unknown or len(codings) > _MAX_CODINGS:
            raise ProtocolError(
                f"server answered with Content-Encoding {header[:100]!r}, which we did not ask"
                f" for (Accept-Encoding: {ACCEPT_ENCODING})",
                endpoint=self.url,
                session_id=session_id,
                hint="Configure the server (or proxy) to honour Accept-Encoding",
            )
        return [_Inflater("deflate" if c == "deflate" else "gzip") for c in reversed(codings)]

    async def _body(
        self, response: WireResponse, session_id: str | None
    ) -> AsyncGenerator[bytes, None]:
        """The body as it arrives, decompressed by us in bounded pieces."""
        if response.is_stream_consumed:
            yield response.content  # given whole (httpx.MockTransport): already decoded
            return
        stages = self._stages(response, session_id)
        if not stages:
            async for raw in response.aiter_raw():
                yield raw
            return
        try:
            async for raw in response.aiter_raw():
                for piece in _inflate(stages, raw):
                    yield piece
        except zlib.error as exc:
            names = ", ".join(stage.name for stage in reversed(stages))
            raise ProtocolError(
                f"response body is not valid {names} data ({exc})",
                endpoint=self.url,
                session_id=session_id,
                hint="The server's Content-Encoding does not match its body",
            ) from None

    async def _read_capped(self, response: WireResponse, session_id: str | None) -> bytes:
        length = response.headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and len(length) < 20
            and not response.headers.get("content-encoding")
            and int(length) > self.max_message_bytes
        ):
            raise ProtocolError(
                f"response body of {length} bytes exceeds the {self.max_message_bytes}-byte cap",
                endpoint=self.url,
                session_id=session_id,
            )
        chunks: list[bytes] = []
        size = 0
        async with aclosing(self._body(response, session_id)) as body:
            async for chunk in body:
                size += len(chunk)
                if size > self.max_message_bytes:
                    raise ProtocolError(
                        f"response body exceeds the {self.max_message_bytes}-byte cap",
                        endpoint=self.url,
                        session_id=session_id,
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    async def _read_sse(
        self, response: WireResponse, session_id: str | None, cursor: StreamCursor
    ) -> AsyncGenerator[dict[str, Any], None]:
        events = iter_events(
            self._body(response, session_id),
            max_event_bytes=self.max_message_bytes,
            endpoint=self.url,
            session_id=session_id,
        )
        try:
            async for event in events:
                if event.retry is not None:
                    cursor.retry_ms = event.retry
                if event.id:  # the id sent on this very event, never one carried forward
                    if event.id in cursor.seen_ids:
                        # A replay of something already delivered: exactly-once means drop it.
                        logger.debug("dropping replayed SSE event %r from %s", event.id, self.url)
                        continue
                    cursor.seen_ids.add(event.id)
                    if header_safe_event_id(event.id):
                        cursor.last_event_id = event.id
                    elif not cursor.warned_unsafe_id:
                        cursor.warned_unsafe_id = True
                        logger.warning(
                            "SSE event id %r from %s cannot be sent back as Last-Event-ID;"
                            " a resumption will start from the last id that can",
                            event.id[:64],
                            self.url,
                        )
                elif not event.data:
                    continue  # a bare `retry:` block is no event (and no progress)
                cursor.events += 1
                # Priming events (an id, empty data) and anything without data are no messages.
                if not event.data.strip():
                    continue
                if event.event not in ("", "message"):
                    logger.debug("ignoring SSE event of type %r from %s", event.event, self.url)
                    continue
                yield _decode_message(event.data, endpoint=self.url, session_id=session_id)
        finally:
            await events.aclose()

    async def _raise_status(
        self, response: WireResponse, method: str, session_id: str | None
    ) -> None:
        status = response.status_code
        try:
            body = (await self._read_capped(response, session_id)).decode(errors="replace")[:2000]
        except (ProtocolError, httpx.TransportError, httpx.StreamError):
            body = ""
        detail = ""
        try:
            parsed = json.loads(body) if body else None
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                detail = f": {parsed['error'].get('message', '')}"
        except (ValueError, RecursionError):
            pass
        if status == 404 and session_id is not None:
            raise SessionExpiredError(
                404,
                f"session not found on {method} (HTTP 404){detail}",
                endpoint=self.url,
                session_id=session_id,
                hint="Start a new session (ResilientClient does this for you when it can)",
                body=body,
            )
        hints = {
            400: "The server rejected the request as malformed or missing a session",
            401: "Pass credentials with auth= or headers=",
            403: "The server refused the request (credentials or Origin)",
            404: "Check the endpoint URL (usually it ends in /mcp)",
            406: "The server did not accept the Accept header",
            429: "The server is rate limiting; retry later",
            503: "The server is unavailable; retry later",
        }
        hint = hints.get(status)
        if 300 <= status < 400:
            hint = "Redirects are not followed (credentials stay with the configured endpoints)"
        raise HTTPStatusError(
            status,
            f"{method} got HTTP {status}{detail}",
            endpoint=self.url,
            session_id=session_id,
            hint=hint,
            body=body,
            retry_after=_retry_after(response),
        )
