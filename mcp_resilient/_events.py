"""Events the client reports: to ``logging`` and to an optional user callback.

Agents and dashboards want to see retries, failovers and session changes as they
happen, without parsing log lines. Every event goes to both places.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from ._telemetry import record_event

__all__ = ["Event", "EventCallback", "EventKind"]

logger = logging.getLogger("mcp_resilient")

EventKind: TypeAlias = Literal[
    "session_started",
    "session_lost",
    "session_resumed",
    "resume_failed",
    "retry",
    "failover",
    "endpoint_down",
    "endpoint_up",
    "outcome_unknown",
    "stream_resumed",
    "closed",
    "background_error",
    "listen_lost",
    "server_requests_shed",
]
"""What happened: the ``kind`` of an ``Event``."""

_LEVELS: dict[str, int] = {
    "session_lost": logging.WARNING,
    "resume_failed": logging.WARNING,
    "failover": logging.WARNING,
    "endpoint_down": logging.WARNING,
    "outcome_unknown": logging.WARNING,
    "background_error": logging.WARNING,
    "listen_lost": logging.WARNING,
    "server_requests_shed": logging.WARNING,
    "retry": logging.INFO,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to the client, with where it happened."""

    kind: EventKind
    endpoint: str | None = None
    session_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def __str__(self) -> str:
        where = " ".join(
            part
            for part in (
                f"endpoint={self.endpoint}" if self.endpoint else "",
                f"session={self.session_id}" if self.session_id else "",
            )
            if part
        )
        extra = " ".join(f"{k}={v}" for k, v in self.detail.items())
        return " ".join(part for part in (self.kind, where, extra) if part)


EventCallback: TypeAlias = Callable[[Event], Awaitable[None] | None]
"""``on_event(event)``: sync or async; exceptions it raises are logged, never propagated."""


class EventSink:
    """Sends events to the logger and to the user's callback."""

    def __init__(self, callback: EventCallback | None) -> None:
        self.callback = callback

    async def emit(
        self,
        kind: EventKind,
        *,
        endpoint: str | None = None,
        session_id: str | None = None,
        **detail: Any,
    ) -> Event:
        event = Event(kind, endpoint, session_id, detail)
        logger.log(_LEVELS.get(kind, logging.DEBUG), "%s", event)
        record_event(event)  # OpenTelemetry: one more hook (a no-op until a traced call)
        if self.callback is not None:
            try:
                outcome = self.callback(event)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("on_event callback raised for %s", kind)
        return event
