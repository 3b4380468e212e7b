"""A bounded, incremental Server-Sent Events parser.

We parse SSE ourselves instead of using httpx-sse's ``EventSource`` for two reasons:

- Memory: a hostile or broken server must not make us hold an unbounded amount of it.
  The parser counts the bytes of the current (not yet dispatched) event at the line
  level, so the count is right for every legal line ending (CRLF, LF, CR) however the
  bytes are chunked, and stops the stream once an event passes the cap. Event ids are
  capped too: they are remembered per stream to drop replays.
- Replays: httpx-sse reports the stream's *last* event id on every event, so an event
  without an id looks like a replay of the one before. Here ``ServerSentEvent.id`` is
  the id sent on that very event (``""`` when it carried none).

The parser works on bytes, one line at a time (``bytes.splitlines`` does the scanning
in C), and decodes UTF-8 with replacement once per event, as the SSE standard says.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing

from httpx_sse import ServerSentEvent

from .errors import EventTooLargeError, ProtocolError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "MAX_EVENT_ID_BYTES", "SSEParser", "iter_events"]

DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
"""Default cap on one SSE event (and on one JSON body): 4 MiB."""

MAX_EVENT_ID_BYTES = 1024
"""Cap on one SSE event id. Ids are kept (thousands per stream) to drop replays."""

_BOM = b"\xef\xbb\xbf"
_LF = 10
_CR = 13
_MAX_RETRY_DIGITS = 9  # ~11 days in milliseconds; longer values are ignored


class SSEParser:
    """Turns chunks of an SSE body into events; raises once an event passes the cap.

    ``feed`` is a generator: exhaust it for every chunk. An event that is still
    incomplete when the body ends is dropped, as the SSE standard requires.
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_event",
        "_id",
        "_partial",
        "_partial_len",
        "_retry",
        "_size",
        "_skip_lf",
        "endpoint",
        "max_event_bytes",
        "session_id",
    )

    def __init__(
        self,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        *,
        endpoint: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.max_event_bytes = max_event_bytes
        self.endpoint = endpoint
        self.session_id = session_id
        self._partial: list[bytes] = []  # the current line, not yet terminated
        self._partial_len = 0
        self._skip_lf = False  # the last chunk ended in CR: a leading LF belongs to it
        self._at_start = True  # a BOM may open the stream
        self._size = 0  # bytes of the current event's complete lines (terminators excluded)
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._id: bytes | None = None
        self._retry: int | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the current event: never more than the cap plus one chunk."""
        return self._size + self._partial_len

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        """The events that ``chunk`` completes."""
        if not chunk:
            return
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
                if not chunk:
                    return
        if b"\n" not in chunk and b"\r" not in chunk:
            # The middle of a line: keep it without copying what came before.
            self._partial.append(chunk)
            self._partial_len += len(chunk)
            self._check(self._size + self._partial_len)
            return
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial = []
            self._partial_len = 0
        lines = chunk.splitlines()  # splits on CRLF, LF and CR only (bytes, not str)
        last = chunk[-1]
        if last == _CR:
            self._skip_lf = True
        elif last != _LF:
            tail = lines.pop()
            self._partial.append(tail)
            self._partial_len = len(tail)
        if self._at_start:
            self._at_start = False
            if lines[0][:3] == _BOM:  # the standard drops one BOM at the very start
                lines[0] = lines[0][3:]
                self._size += 3
                self._check(self._size)
        for line in lines:
            if not line:
                event = self._dispatch()
                if event is not None:
                    yield event
                continue
            self._size += len(line)
            self._check(self._size)
            self._field(line)
        self._check(self._size + self._partial_len)

    def _check(self, size: int) -> None:
        if size > self.max_event_bytes:
            raise EventTooLargeError(
                f"SSE event larger than the {self.max_event_bytes}-byte cap",
                endpoint=self.endpoint,
                session_id=self.session_id,
                hint="Raise max_event_bytes if the server legitimately sends events this large",
            )

    def _field(self, line: bytes) -> None:
        if line[0] == 0x3A:  # ":" opens a comment
            return
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"id":
            if b"\0" in value:
                return  # the standard says: ignore the field
            if len(value) > MAX_EVENT_ID_BYTES:
                raise ProtocolError(
                    f"server sent an SSE event id of {len(value)} bytes;"
                    f" the limit is {MAX_EVENT_ID_BYTES}",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                    hint="Event ids are kept to drop replays, so they must stay short",
                )
            self._id = value
        elif name == b"event":
            self._event = value
        elif name == b"retry" and value.isdigit() and len(value) <= _MAX_RETRY_DIGITS:
            self._retry = int(value)  # bytes.isdigit: ASCII digits only
        # Any other field is ignored, as the standard says.

    def _dispatch(self) -> ServerSentEvent | None:
        self._size = 0
        if not self._data and self._event is None and self._id is None and self._retry is None:
            return None  # a blank line after nothing (or after comments only)
        event = ServerSentEvent(
            event=self._event.decode("utf-8", "replace") if self._event else None,
            data=b"\n".join(self._data).decode("utf-8", "replace") if self._data else None,
            id=self._id.decode("utf-8", "replace") if self._id is not None else None,
            retry=self._retry,
        )
        self._data = []
        self._event = None
        self._id = None
        self._retry = None
        return event


async def iter_events(
    chunks: AsyncGenerator[bytes, None],
    *,
    max_event_bytes: int,
    endpoint: str | None = None,
    session_id: str | None = None,
) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of an SSE body; raises once one exceeds ``max_event_bytes``.

    Each event's ``id`` is the id sent on that event, or ``""`` when it had none.
    """
    parser = SSEParser(max_event_bytes, endpoint=endpoint, session_id=session_id)
    async with aclosing(chunks):
        async for chunk in chunks:
            for event in parser.feed(chunk):
                yield event
