"""Server-Sent Events for the fake: encoding, a resumable event store and streaming bodies.

Events are kept per session so that a GET with ``Last-Event-ID`` can replay what a client
missed after a cut, the way a server with an event store does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx

__all__ = ["SSEEvent", "parse_sse"]

logger = logging.getLogger("mcp_resilient.testing")

CutError = Literal["disconnect", "read_error"]


@dataclass(frozen=True)
class SSEEvent:
    """One parsed SSE event; ``data`` is ``""`` for a priming event (id only)."""

    data: str
    id: str | None = None
    event: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """The data decoded as JSON (the JSON-RPC message the event carries)."""
        return json.loads(self.data)


def parse_sse(text: str | bytes) -> list[SSEEvent]:
    """Parse an SSE body into events, keeping id-only (priming) events.

    A deliberately small parser for assertions in tests: comments and events with neither
    data nor id (which a browser would not dispatch either) are skipped.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    events: list[SSEEvent] = []
    data: list[str] = []
    event_id: str | None = None
    event_name: str | None = None
    retry: int | None = None
    seen_field = False
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw == "":
            if seen_field and (any(data) or event_id is not None or retry is not None):
                events.append(SSEEvent("\n".join(data), event_id, event_name, retry))
            data, event_id, event_name, retry, seen_field = [], None, None, None, False
            continue
        if raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        value = value.removeprefix(" ")
        seen_field = True
        if name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "event":
            event_name = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
    return events


@dataclass
class StoredEvent:
    """An event as the server keeps it: ``message`` is None for a priming event."""

    id: str | None
    message: dict[str, Any] | None
    retry: int | None = None
    raw: bytes | None = None  # pre-encoded bytes (used by garbage faults)

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        lines: list[str] = []
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        if self.message is None:
            lines.append("data: ")
        else:
            lines.append("event: message")
            lines.append("data: " + json.dumps(self.message, separators=(",", ":")))
        return ("\n".join(lines) + "\n\n").encode("utf-8")


@dataclass
class StreamLog:
    """The events of one SSE stream (a POST answer or a session's listen stream)."""

    stream_id: int
    kind: Literal["request", "listen"]
    events: list[StoredEvent] = field(default_factory=list)
    delivered: int = 0  # listen streams: how many events some GET has already sent
    lost: bool = False  # request streams: the rest of the answer is gone for good


class EventStore:
    """Event ids and replay positions for one session.

    Ids look like ``"<stream>-<seq>"``: unique within the session, and naming their stream.
    """

    def __init__(self, with_ids: bool) -> None:
        self.with_ids = with_ids
        self.streams: dict[int, StreamLog] = {}
        self._index: dict[str, tuple[int, int]] = {}
        self._next_stream = 1

    def new_stream(self, kind: Literal["request", "listen"]) -> StreamLog:
        log = StreamLog(self._next_stream, kind)
        self.streams[log.stream_id] = log
        self._next_stream += 1
        return log

    def append(
        self,
        log: StreamLog,
        message: dict[str, Any] | None,
        *,
        retry: int | None = None,
        raw: bytes | None = None,
    ) -> StoredEvent:
        event_id: str | None = None
        if self.with_ids:
            event_id = f"{log.stream_id}-{len(log.events) + 1}"
            self._index[event_id] = (log.stream_id, len(log.events))
        event = StoredEvent(event_id, message, retry, raw)
        log.events.append(event)
        return event

    def truncate(self, log: StreamLog, keep: int) -> None:
        """Forget every event of ``log`` after the first ``keep`` ones (an answer lost)."""
        for event in log.events[keep:]:
            if event.id is not None:
                self._index.pop(event.id, None)
        del log.events[keep:]
        log.lost = True

    def locate(self, event_id: str) -> tuple[StreamLog, int] | None:
        """The stream an event id belongs to and the position right after it."""
        found = self._index.get(event_id)
        if found is None:
            return None
        stream_id, position = found
        return self.streams[stream_id], position + 1


class Waker:
    """Wakes listen streams when a message is queued; created lazily inside the event loop."""

    def __init__(self) -> None:
        self._events: set[anyio.Event] = set()

    def add(self) -> anyio.Event:
        event = anyio.Event()
        self._events.add(event)
        return event

    def discard(self, event: anyio.Event) -> None:
        self._events.discard(event)

    def wake(self) -> None:
        events, self._events = self._events, set()
        for event in events:
            try:
                event.set()
            except RuntimeError:  # its loop is gone (a client leaked the stream)
                logger.debug("could not wake a listen stream: its event loop is closed")


@dataclass
class Cut:
    """Where and how a stream breaks."""

    after_events: int
    graceful: bool = False
    error: CutError = "disconnect"
    at_end: bool = False  # also break when a finite stream runs out before ``after_events``


class EventBody(httpx.AsyncByteStream):
    """A streaming SSE body over a ``StreamLog``.

    Finite (``live=False``) for a POST answer or a replay; live for a listen stream, which
    waits for new events until it is closed by the client, the server or a scripted cut.
    A class rather than a bare generator so that ``aclose`` works from any task.
    """

    def __init__(
        self,
        request: httpx.Request,
        log: StreamLog,
        start: int,
        *,
        live: bool,
        waker: Waker | None = None,
        is_open: Callable[[], bool] | None = None,
        cut: Cut | None = None,
        on_close: Callable[[], None] | None = None,
        prefix: bytes = b"",
    ) -> None:
        self._request = request
        self._log = log
        self._position = start
        self._live = live
        self._waker = waker
        self._is_open = is_open
        self._cut = cut
        self._on_close = on_close
        self._prefix = prefix
        self._closed = False
        self._wait: anyio.Event | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        try:
            if self._prefix:
                yield self._prefix
            while not self._closed:
                if self._position < len(self._log.events):
                    if self._cut is not None and sent >= self._cut.after_events:
                        self._break()
                        return
                    event = self._log.events[self._position]
                    self._position += 1
                    if self._live:
                        self._log.delivered = max(self._log.delivered, self._position)
                    sent += 1
                    yield event.encode()
                    continue
                if not self._live:
                    if self._cut is not None and self._cut.at_end:
                        self._break()
                    return
                if self._is_open is not None and not self._is_open():
                    return
                assert self._waker is not None
                self._wait = self._waker.add()
                try:
                    await self._wait.wait()
                finally:
                    self._waker.discard(self._wait)
                    self._wait = None
        finally:
            self._finish()

    def _break(self) -> None:
        cut = self._cut
        assert cut is not None
        self._finish()
        if cut.graceful:
            return
        if cut.error == "read_error":
            raise httpx.ReadError("connection reset by peer", request=self._request)
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body "
            "(incomplete chunked read)",
            request=self._request,
        )

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()

    async def aclose(self) -> None:
        self._finish()
        if self._wait is not None:
            self._wait.set()
