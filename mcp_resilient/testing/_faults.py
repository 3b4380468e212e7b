"""Scripted faults: deterministic, composable failures the fake server injects on the wire.

A fault is a rule: a target (which requests), a count (``times``, after skipping ``after``
matching requests) and an effect. Rules of one kind form a queue in the order they were
added: ``status(503)`` then ``status(500)`` answers 503 to the first matching request and
500 to the second. Rules of different kinds compose, applied in stage order:

``connect_error`` → ``delay`` → ``redirect`` → ``status`` → ``expire_session`` →
(the request is executed) → ``lose_response`` → ``garbage`` → ``cut_stream``/``poll`` →
``respond_as``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

import httpx

if TYPE_CHECKING:
    from ._records import RecordedRequest

__all__ = [
    "MAX_DELAY_SECONDS",
    "ConnectErrorFault",
    "CutStreamFault",
    "DelayFault",
    "ExpireSessionFault",
    "Fault",
    "FaultScript",
    "GarbageFault",
    "GarbageKind",
    "LoseResponseFault",
    "PollFault",
    "RedirectFault",
    "RespondAsFault",
    "ResponseMode",
    "StatusFault",
    "Target",
]

logger = logging.getLogger("mcp_resilient.testing")

MAX_DELAY_SECONDS = 10.0
"""Longest scripted delay: fakes must keep test suites fast."""

ResponseMode = Literal["json", "sse", "auto"]

GarbageKind = Literal[
    "bad_json",
    "not_jsonrpc",
    "wrong_id",
    "empty_body",
    "wrong_content_type",
    "no_content_type",
    "accepted",
    "sse_bad_json",
    "sse_comments_only",
    "huge_event",
    "bad_session_id",
]
GARBAGE_KINDS: tuple[str, ...] = get_args(GarbageKind)

Stage = Literal[
    "connect", "delay", "redirect", "status", "expire", "lose", "garbage", "stream", "mode"
]


def normalize_url(url: str | httpx.URL) -> str:
    """One spelling per endpoint: scheme, host, explicit port and path, no query."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.scheme}://{parsed.host}:{port}{parsed.path or '/'}"


def same_endpoint(endpoint: str | None, url: str) -> bool:
    """Whether a request's endpoint is ``url``, however either is spelled (None: no endpoint).

    Used both to target faults and to filter the request log, so the two agree.
    """
    return endpoint is not None and normalize_url(endpoint) == normalize_url(url)


@dataclass(frozen=True)
class Target:
    """Which requests a fault applies to; unset fields match anything.

    ``http_method`` defaults to ``"POST"`` so that a client's background GET stream does not
    consume faults meant for its calls; pass ``"GET"``, ``"DELETE"`` or ``"*"``.
    """

    method: str | None = None
    tool: str | None = None
    url: str | None = None
    http_method: str | None = "POST"
    session_id: str | None = None

    def matches(self, rec: RecordedRequest) -> bool:
        if self.http_method not in (None, "*") and rec.http_method != self.http_method.upper():
            return False
        if self.tool is not None and rec.tool_name != self.tool:
            return False
        if self.method is not None and rec.method != self.method:
            return False
        if self.url is not None and not same_endpoint(rec.endpoint, self.url):
            return False
        return self.session_id is None or rec.session_id == self.session_id


@dataclass(eq=False)
class Fault:
    """A scripted rule; keep the handle to check ``fired`` or to ``cancel()`` it."""

    target: Target
    times: int | None
    after: int
    kind: str = field(init=False, default="fault")
    stage: Stage = field(init=False, default="status")
    seen: int = field(init=False, default=0)
    fired: int = field(init=False, default=0)
    cancelled: bool = field(init=False, default=False)

    @property
    def exhausted(self) -> bool:
        """True once it fired ``times`` times."""
        return self.times is not None and self.fired >= self.times

    @property
    def active(self) -> bool:
        return not self.cancelled and not self.exhausted

    def cancel(self) -> None:
        """Stop this fault from firing again."""
        self.cancelled = True

    def __repr__(self) -> str:
        times = "forever" if self.times is None else f"{self.fired}/{self.times}"
        return f"<{type(self).__name__} {self.kind} fired {times} target={self.target}>"


@dataclass(eq=False, repr=False)
class ConnectErrorFault(Fault):
    error: Literal["refused", "timeout"] = "refused"

    def __post_init__(self) -> None:
        self.kind, self.stage = "connect_error", "connect"

    def exception(self, request: httpx.Request) -> httpx.TransportError:
        if self.error == "timeout":
            return httpx.ConnectTimeout("timed out while connecting", request=request)
        return httpx.ConnectError("[Errno 111] Connection refused", request=request)


@dataclass(eq=False, repr=False)
class DelayFault(Fault):
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.kind, self.stage = "delay", "delay"


@dataclass(eq=False, repr=False)
class RedirectFault(Fault):
    location: str = ""
    status: int = 307

    def __post_init__(self) -> None:
        self.kind, self.stage = "redirect", "redirect"


@dataclass(eq=False, repr=False)
class StatusFault(Fault):
    status: int = 503
    retry_after: float | str | None = None
    headers: dict[str, str] | None = None
    body: str | bytes | None = None
    content_type: str = "text/plain"

    def __post_init__(self) -> None:
        self.kind, self.stage = "status", "status"


@dataclass(eq=False, repr=False)
class ExpireSessionFault(Fault):
    def __post_init__(self) -> None:
        self.kind, self.stage = "expire_session", "expire"


@dataclass(eq=False, repr=False)
class LoseResponseFault(Fault):
    error: Literal["disconnect", "read_error", "read_timeout"] = "disconnect"

    def __post_init__(self) -> None:
        self.kind, self.stage = "lose_response", "lose"

    def exception(self, request: httpx.Request) -> httpx.TransportError:
        if self.error == "read_error":
            return httpx.ReadError("connection reset by peer", request=request)
        if self.error == "read_timeout":
            return httpx.ReadTimeout("timed out while reading the response", request=request)
        return httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )


@dataclass(eq=False, repr=False)
class GarbageFault(Fault):
    garbage: GarbageKind = "bad_json"
    size: int = 1 << 20

    def __post_init__(self) -> None:
        self.kind, self.stage = f"garbage:{self.garbage}", "garbage"


@dataclass(eq=False, repr=False)
class CutStreamFault(Fault):
    after_events: int = 0
    respond: bool = True
    graceful: bool = False
    error: Literal["disconnect", "read_error"] = "disconnect"

    def __post_init__(self) -> None:
        self.kind, self.stage = "cut_stream", "stream"


@dataclass(eq=False, repr=False)
class PollFault(Fault):
    retry_ms: int = 1

    def __post_init__(self) -> None:
        self.kind, self.stage = "poll", "stream"


@dataclass(eq=False, repr=False)
class RespondAsFault(Fault):
    mode: ResponseMode = "json"

    def __post_init__(self) -> None:
        self.kind, self.stage = f"respond_as:{self.mode}", "mode"


def _check_count(times: int | None, after: int) -> None:
    if times is not None and times < 1:
        raise ValueError("times must be at least 1 (or None for every matching request)")
    if after < 0:
        raise ValueError("after must not be negative")


class FaultScript:
    """The fault rules of one fake server (``server.faults``).

    Every method takes the same targeting keywords: ``method`` (JSON-RPC method), ``tool``
    (a ``tools/call`` tool name), ``url`` (one endpoint of a cluster), ``http_method``
    (default ``"POST"``; ``"*"`` for any), ``session_id``; and the count: ``times`` (default 1,
    None for every match) after letting ``after`` matching requests through.
    Each returns the ``Fault`` so a test can check ``fault.fired`` or ``fault.cancel()`` it.
    """

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    @property
    def all(self) -> list[Fault]:
        """Every rule added, fired or not, in order."""
        return list(self._faults)

    @property
    def pending(self) -> list[Fault]:
        """Rules that can still fire."""
        return [f for f in self._faults if f.active]

    def clear(self) -> None:
        """Drop every rule."""
        self._faults.clear()

    def _add(self, fault: Fault) -> Fault:
        _check_count(fault.times, fault.after)
        self._faults.append(fault)
        logger.debug("scripted %r", fault)
        return fault

    def fire(self, rec: RecordedRequest, stage: Stage) -> list[Fault]:
        """The rules of ``stage`` that fire on ``rec`` (all delays; otherwise the first)."""
        fired: list[Fault] = []
        for fault in self._faults:
            if fault.stage != stage or not fault.active or not fault.target.matches(rec):
                continue
            fault.seen += 1
            if fault.seen <= fault.after:
                continue
            fault.fired += 1
            rec.faults.append(fault.kind)
            logger.debug("fault %s fired on request #%d", fault.kind, rec.index)
            fired.append(fault)
            if stage != "delay":
                break
        return fired

    # -- the rules ---------------------------------------------------------------------------

    def connect_error(
        self,
        *,
        error: Literal["refused", "timeout"] = "refused",
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> ConnectErrorFault:
        """The request never reaches the server: ``httpx.ConnectError`` (or ``ConnectTimeout``)."""
        fault = ConnectErrorFault(
            Target(method, tool, url, http_method, session_id), times, after, error=error
        )
        self._add(fault)
        return fault

    def delay(
        self,
        seconds: float,
        *,
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> DelayFault:
        """Answer late (an event-loop sleep, at most ``MAX_DELAY_SECONDS``).

        The request still executes; if the client's read timeout is shorter, the fake waits
        that long and raises ``httpx.ReadTimeout`` instead of answering.
        """
        if not 0 <= seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY_SECONDS} seconds")
        fault = DelayFault(
            Target(method, tool, url, http_method, session_id), times, after, seconds=seconds
        )
        self._add(fault)
        return fault

    def redirect(
        self,
        location: str,
        *,
        status: int = 307,
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> RedirectFault:
        """Answer a redirect to ``location`` (for checking where credentials go)."""
        if not 300 <= status < 400:
            raise ValueError("a redirect needs a 3xx status")
        fault = RedirectFault(
            Target(method, tool, url, http_method, session_id),
            times,
            after,
            location=location,
            status=status,
        )
        self._add(fault)
        return fault

    def status(
        self,
        status: int,
        *,
        retry_after: float | str | None = None,
        headers: dict[str, str] | None = None,
        body: str | bytes | None = None,
        content_type: str = "text/plain",
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> StatusFault:
        """Answer ``status`` without executing the request (an overloaded server or proxy).

        ``retry_after`` sets the ``Retry-After`` header (seconds or an HTTP date).
        """
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        fault = StatusFault(
            Target(method, tool, url, http_method, session_id),
            times,
            after,
            status=status,
            retry_after=retry_after,
            headers=headers,
            body=body,
            content_type=content_type,
        )
        self._add(fault)
        return fault

    def expire_session(
        self,
        *,
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> ExpireSessionFault:
        """The session a matching request carries is gone just before it arrives: 404.

        The session stays gone (as on a real server); requests without a session id
        (``initialize``) do not trigger it.
        """
        fault = ExpireSessionFault(Target(method, tool, url, http_method, session_id), times, after)
        self._add(fault)
        return fault

    def lose_response(
        self,
        *,
        error: Literal["disconnect", "read_error", "read_timeout"] = "disconnect",
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> LoseResponseFault:
        """The request executes (a tool runs) but its answer never arrives.

        The client sees ``httpx.RemoteProtocolError`` (``"disconnect"``), ``httpx.ReadError``
        or ``httpx.ReadTimeout``: the ambiguous failure that makes retries unsafe.
        """
        fault = LoseResponseFault(
            Target(method, tool, url, http_method, session_id), times, after, error=error
        )
        self._add(fault)
        return fault

    def garbage(
        self,
        kind: GarbageKind,
        *,
        size: int = 1 << 20,
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> GarbageFault:
        """The request executes but the answer is malformed.

        Kinds: ``bad_json`` (truncated JSON), ``not_jsonrpc`` (JSON but no JSON-RPC),
        ``wrong_id`` (the response answers another id), ``empty_body``,
        ``wrong_content_type`` (an HTML page), ``no_content_type``, ``accepted`` (202 to a
        request), ``sse_bad_json`` (an SSE event whose data is not JSON),
        ``sse_comments_only`` (an SSE stream with only comments and an empty ``data:``, then
        EOF), ``huge_event`` (an SSE notification of ``size`` bytes before the response) and
        ``bad_session_id`` (an ``Mcp-Session-Id`` with characters outside 0x21–0x7E).
        """
        if kind not in GARBAGE_KINDS:
            raise ValueError(f"unknown garbage kind {kind!r}; one of {', '.join(GARBAGE_KINDS)}")
        fault = GarbageFault(
            Target(method, tool, url, http_method, session_id),
            times,
            after,
            garbage=kind,
            size=size,
        )
        self._add(fault)
        return fault

    def cut_stream(
        self,
        *,
        after_events: int = 0,
        respond: bool = True,
        graceful: bool = False,
        error: Literal["disconnect", "read_error"] = "disconnect",
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> CutStreamFault:
        """Break an SSE stream after ``after_events`` events (forces an SSE answer).

        ``respond=True``: the server still finishes the request and keeps the rest of the
        events, so a GET with ``Last-Event-ID`` replays them (including the response).
        ``respond=False``: the rest is lost; a resumption replays nothing and ends.
        ``graceful=True`` ends the stream cleanly instead of raising
        ``httpx.RemoteProtocolError`` (``error="read_error"``: ``httpx.ReadError``).
        With ``http_method="GET"`` it cuts listen streams and replays instead.
        """
        if after_events < 0:
            raise ValueError("after_events must not be negative")
        fault = CutStreamFault(
            Target(method, tool, url, http_method, session_id),
            times,
            after,
            after_events=after_events,
            respond=respond,
            graceful=graceful,
            error=error,
        )
        self._add(fault)
        return fault

    def poll(
        self,
        *,
        retry_ms: int = 1,
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> PollFault:
        """2025-11-25 polling: send a priming event with ``retry: retry_ms``, then close.

        The answer is kept; the client must wait ``retry_ms`` and resume with a GET carrying
        ``Last-Event-ID``.
        """
        if retry_ms < 0:
            raise ValueError("retry_ms must not be negative")
        fault = PollFault(
            Target(method, tool, url, http_method, session_id), times, after, retry_ms=retry_ms
        )
        self._add(fault)
        return fault

    def respond_as(
        self,
        mode: ResponseMode,
        *,
        times: int | None = 1,
        after: int = 0,
        method: str | None = None,
        tool: str | None = None,
        url: str | None = None,
        http_method: str | None = "POST",
        session_id: str | None = None,
    ) -> RespondAsFault:
        """Not a fault: answer matching requests as ``"json"``, ``"sse"`` or ``"auto"``."""
        fault = RespondAsFault(
            Target(method, tool, url, http_method, session_id), times, after, mode=mode
        )
        self._add(fault)
        return fault
