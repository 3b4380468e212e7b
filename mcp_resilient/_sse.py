"""Bounded Server-Sent Events reading on top of httpx-sse.

httpx-sse's ``EventSource`` buffers a line until it sees a newline, so a hostile or
broken server could make it hold an unbounded amount of memory. We hand it a thin
view of the response whose text iterator counts what has arrived since the last
complete event and stops the stream once that passes the cap.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import httpx
from httpx_sse import EventSource, ServerSentEvent

from .errors import EventTooLargeError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "iter_events"]

DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
"""Default cap on one SSE event (and on one JSON body): 4 MiB."""


_BOUNDARIES = ("\n\n", "\r\n\r\n", "\r\r")


class _CappedResponse:
    """Just enough of ``httpx.Response`` for ``EventSource``, with a size guard.

    It counts the characters since the last blank line (the end of an event) and stops
    the stream once that passes the cap, so no single event can grow without bound.
    """

    __slots__ = ("_response", "cap", "pending", "where")

    def __init__(self, response: httpx.Response, cap: int, where: dict[str, str | None]) -> None:
        self._response = response
        self.cap = cap
        self.pending = 0
        self.where = where

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    async def aiter_text(self) -> AsyncIterator[str]:
        async for text in self._response.aiter_text():
            end = max(text.rfind(boundary) for boundary in _BOUNDARIES)
            self.pending = len(text) - end if end >= 0 else self.pending + len(text)
            if self.pending > self.cap:
                raise EventTooLargeError(
                    f"SSE event larger than the {self.cap}-byte cap",
                    endpoint=self.where.get("endpoint"),
                    session_id=self.where.get("session_id"),
                    hint="Raise max_event_bytes if the server legitimately sends events this large",
                )
            yield text


def iter_events(
    response: httpx.Response,
    *,
    max_event_bytes: int,
    endpoint: str | None = None,
    session_id: str | None = None,
) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of an SSE response; raises once one exceeds ``max_event_bytes``."""
    # SSE is UTF-8 by definition; saying so spares httpx parsing the charset per response.
    response.encoding = "utf-8"
    capped = _CappedResponse(
        response, max_event_bytes, {"endpoint": endpoint, "session_id": session_id}
    )
    return EventSource(capped).aiter_sse()  # type: ignore[arg-type]
