"""The exchange layer: one request and its answer over one wire.

Layers, bottom up: the wire (``_transports``), this exchange, the eras (``_eras``), the
recovery layer (``_recovery``), the public client (``_client``). A ``Session`` correlates
JSON-RPC over one endpoint: it sends requests and notifications, reads the SSE answer
(resuming it with a GET when the stream breaks), routes whatever else comes back (server
notifications and requests, the listen stream) and keeps every wait inside the caller's
deadline. It decides nothing about retries or endpoints: a failure is raised, typed, for
the recovery layer. What differs between protocol eras (handshake, headers, listen
stream) is delegated to the ``Era`` it is given, known here only as a type, so the eras
build on the exchange and never the other way round.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import anyio
import mcp_types
from anyio.abc import TaskGroup

from ._background import Background
from ._events import EventSink
from ._handlers import Handlers, ProgressHandler, ServerRequestError, call_progress
from ._headers import valid_session_id
from ._transports import CURRENT_MARK, HTTPWire, QueueMark, StreamCursor, ended_without_answer
from .errors import (
    ConnectError,
    HTTPStatusError,
    MCPError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
    SessionExpiredError,
    StreamEndedError,
    TransportError,
)

if TYPE_CHECKING:
    from ._eras import Era

__all__ = ["Session"]

logger = logging.getLogger("mcp_resilient")

_DRAIN_SECONDS = 0.05
"""How long we read on after an SSE answer's response, for the server to end the stream.

Reading to the end lets the connection go back to the pool; a stream still open after
this is closed (its connection is then dropped, not reused)."""

_LISTEN_MAX_IDLE_RECONNECTS = 5
"""Reconnects of the listen stream in a row that bring no new event before we give up."""

_LISTEN_MIN_RECONNECT_SECONDS = 0.1
"""Least pause between listen reconnects, whatever the server's `retry:` says."""

_RESUME_MIN_RECONNECT_SECONDS = _LISTEN_MIN_RECONNECT_SECONDS
"""Least pause between reconnects of an answer stream once a reconnect brought no message:
`retry: 0` with a new priming id each time must not spin GETs until the deadline."""

MAX_SERVER_REQUESTS = 32
"""Server requests handled at once (each ends in a reply POST); the excess is shed.

A flood of server requests (thousands of pings on the listen stream) must not take the
connection pool and the event loop from the caller's own calls."""


@dataclass(slots=True, eq=False)
class InFlight(QueueMark):
    """One call in progress, as the client sees it: ``aclose`` cancels its scope, and its
    deadline asks whether the request went out (``sent``), under which id, and whether
    it waited for a connection (the ``QueueMark`` fields, filled in by the wire)."""

    scope: anyio.CancelScope | None = None
    sent: bool = False
    request_id: int | str | None = None
    in_doubt: bool = False  # an earlier attempt may have run


CURRENT_CALL = cast("ContextVar[InFlight | None]", CURRENT_MARK)
"""The call the current task is making (set by the client around each call). The same
variable as the wire's ``CURRENT_MARK``: one lookup tells the wire where to note a wait."""


def _left_the_queue(call: InFlight | None) -> bool:
    """The request ended while it waited for a connection: it was never written, so the
    server has nothing to cancel (a queue is left only by a deadline or a cancel, which
    end the call, so the mark is this attempt's)."""
    return call is not None and call.left_queued


def _resumable_break(exc: TransportError) -> bool:
    """A broken connection can be resumed; bad data or an HTTP refusal cannot."""
    return not isinstance(exc, ProtocolError | HTTPStatusError | ConnectError | StreamEndedError)


class _Pending:
    """A request waiting for its response, wherever that response arrives.

    The stream that carries the response is read by the waiting caller itself (the POST
    answer, or its resumption), so a slot is enough: no event to wait on.
    """

    __slots__ = ("message",)

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None

    def resolve(self, message: dict[str, Any]) -> None:
        if self.message is None:
            self.message = message


class Session:
    """Request/response machinery for one session with one endpoint."""

    def __init__(
        self,
        wire: HTTPWire,
        era: Era,
        handlers: Handlers,
        task_group: TaskGroup | Background,
        events: EventSink,
    ) -> None:
        self.wire = wire
        self.era = era
        self.handlers = handlers
        self.task_group = task_group
        self.events = events
        self.closed = False
        self.max_stream_reconnects = 5
        self.on_list_changed: list[Callable[[str], None]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int | str, _Pending] = {}
        self._progress: dict[int | str, ProgressHandler] = {}
        self._server_requests: dict[int | str, anyio.CancelScope] = {}
        self._handling = 0  # server requests being handled or answered right now
        self._shed = 0  # server requests dropped since the last report
        self._listen_scope: anyio.CancelScope | None = None

    @property
    def endpoint(self) -> str:
        return self.wire.url

    @property
    def session_id(self) -> str | None:
        return self.era.session_id

    # -- outgoing ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None,
        progress_handler: ProgressHandler | None = None,
        cancellable: bool = True,
        cursor: StreamCursor | None = None,
    ) -> dict[str, Any]:
        """Send a request and return its ``result``; raise a typed error otherwise."""
        rid = next(self._ids)
        call = CURRENT_CALL.get()
        if call is not None:
            call.request_id = rid  # the caller's deadline may need to name it
        if progress_handler is not None:
            params = dict(params or {})
            meta = dict(params.get("_meta") or {})
            meta["progressToken"] = rid
            params["_meta"] = meta
            self._progress[rid] = progress_handler
        params = self.era.prepare_params(method, params)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        pending = _Pending()
        self._pending[rid] = pending
        cursor = cursor if cursor is not None else StreamCursor()
        try:
            if timeout is None:
                await self._exchange(message, pending, cursor)  # the caller holds the deadline
            else:
                with anyio.fail_after(timeout):
                    await self._exchange(message, pending, cursor)
        except TimeoutError:
            if cancellable and not _left_the_queue(call):
                self._cancel_in_background(rid, "request timed out")
            raise RequestTimeoutError(
                f"{method} got no answer within {timeout:g} s",
                endpoint=self.endpoint,
                session_id=self.session_id,
                hint="Pass a larger timeout= if the server is just slow",
            ) from None
        except anyio.get_cancelled_exc_class():
            if cancellable and pending.message is None and not _left_the_queue(call):
                self._cancel_in_background(rid, "cancelled by the caller")
            raise
        except MCPError as exc:
            exc.request_id = rid
            translated = self.era.translate_error(exc)
            if translated is not exc:
                translated.request_id = rid
                raise translated from exc
            raise
        finally:
            self._pending.pop(rid, None)
            self._progress.pop(rid, None)
        try:
            return self._result_of(method, pending)
        except MCPError as exc:
            exc.request_id = rid  # errors name the request they answer
            raise

    def _result_of(self, method: str, pending: _Pending) -> dict[str, Any]:
        response = pending.message
        assert response is not None
        error = response.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise ProtocolError(
                    f"malformed JSON-RPC error in the answer to {method}",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                )
            code = error.get("code")
            raise ServerError(
                code if isinstance(code, int) else -32603,
                str(error.get("message", "")),
                error.get("data"),
                method=method,
                endpoint=self.endpoint,
                session_id=self.session_id,
            )
        result = response.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(
                f"the answer to {method} has no result object",
                endpoint=self.endpoint,
                session_id=self.session_id,
            )
        return result

    async def _exchange(
        self, message: dict[str, Any], pending: _Pending, cursor: StreamCursor
    ) -> None:
        method = message["method"]
        stream = self.wire.post(
            message,
            self.era.headers(method, message.get("params")),
            session_id=self.session_id,
            cursor=cursor,
        )
        received = 0
        try:
            async for incoming in stream:
                received += 1
                await self.dispatch(incoming)
                if pending.message is not None:
                    if cursor.events:
                        # An SSE answer: servers end it right after the answer. Reading to
                        # that end lets the connection go back to the pool.
                        with anyio.CancelScope(deadline=anyio.current_time() + _DRAIN_SECONDS):
                            try:
                                async for extra in stream:
                                    await self.dispatch(extra)
                            except MCPError as exc:
                                logger.debug("ignoring a failure after the answer: %s", exc)
                    return
        except TransportError as exc:
            # A broken SSE answer can be resumed if the server gave us an event id.
            if not _resumable_break(exc) or cursor.last_event_id is None:
                raise
            logger.debug(
                "answer stream for %s broke after event %s: %s", method, cursor.last_event_id, exc
            )
        finally:
            await stream.aclose()
        if pending.message is not None:
            return
        if cursor.events == 0:
            if received:  # a JSON body that is some other message: a broken answer
                raise ProtocolError(
                    f"the answer to {method} (id {message['id']}) does not carry its response",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                )
            # An SSE answer with no event (or an empty body): nothing to resume from.
            raise ended_without_answer(
                f"the answer to {method} (id {message['id']})",
                endpoint=self.endpoint,
                session_id=self.session_id,
            )
        await self._resume(message, pending, cursor)

    def _resume_headers(self, cursor: StreamCursor) -> dict[str, str]:
        """Headers for a resumption GET.

        Normally the era's; but an interrupted ``initialize`` answer is resumed before the
        era knows the session, so take the id from that answer's own headers.
        """
        headers = self.era.headers("GET")
        if self.session_id is None and cursor.headers is not None:
            session_id = cursor.headers.get("mcp-session-id")
            if session_id is not None and valid_session_id(session_id):
                headers = {**headers, "Mcp-Session-Id": session_id}
        return headers

    async def _resume(
        self, message: dict[str, Any], pending: _Pending, cursor: StreamCursor
    ) -> None:
        """Reconnect with GET + Last-Event-ID until the response arrives or the cap is hit."""
        method, rid = message["method"], message["id"]
        idle = 0
        quiet = 0  # reconnects in a row that brought no message (at most new ids)
        while pending.message is None:
            if cursor.last_event_id is None:
                raise StreamEndedError(
                    f"SSE stream for {method} (id {rid}) ended without a response"
                    " and carried no event id, so it cannot be resumed",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                )
            if idle >= self.max_stream_reconnects:
                raise StreamEndedError(
                    f"SSE stream for {method} (id {rid}) ended without a response;"
                    f" gave up after {idle} reconnects that brought no new event",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                    hint="The server keeps closing the stream without sending anything",
                )
            if cursor.retry_ms is not None:
                delay = cursor.retry_ms / 1000
                if quiet:
                    # A floor, as for the listen stream: a server answering every reconnect
                    # with a new priming id and `retry: 0` must not get a GET loop.
                    delay = max(delay, _RESUME_MIN_RECONNECT_SECONDS)
            else:
                delay = random.uniform(0, min(10.0, 0.1 * 2**idle))
            await anyio.sleep(delay)
            before = cursor.last_event_id
            await self.events.emit(
                "stream_resumed",
                endpoint=self.endpoint,
                session_id=self.session_id,
                request_id=rid,
                last_event_id=before,
            )
            try:
                stream = await self.wire.get_stream(
                    self._resume_headers(cursor), session_id=self.session_id, cursor=cursor
                )
                if stream is None:
                    raise StreamEndedError(
                        f"SSE stream for {method} (id {rid}) ended without a response and the"
                        " server does not allow GET (405), so it cannot be resumed",
                        endpoint=self.endpoint,
                        session_id=self.session_id,
                    )
                quiet += 1
                async with aclosing(stream):
                    async for incoming in stream:
                        quiet = 0
                        await self.dispatch(incoming)
                        if pending.message is not None:
                            return
            except (ConnectError, HTTPStatusError) as exc:
                # The request went out earlier; failing to resume leaves its outcome open.
                raise StreamEndedError(
                    f"SSE stream for {method} (id {rid}) ended without a response and could"
                    f" not be resumed: {exc.message}",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                ) from exc
            except TransportError as exc:
                if not _resumable_break(exc):
                    raise
                logger.debug("resumed stream for %s broke: %s", method, exc)
            idle = 0 if cursor.last_event_id != before else idle + 1

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification; the server must answer 202."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._post_no_answer(message, method)

    async def _post_no_answer(self, message: dict[str, Any], method: str) -> None:
        stream = self.wire.post(message, self.era.headers(method), session_id=self.session_id)
        async with aclosing(stream):
            async for _ in stream:
                pass

    def _cancel_in_background(self, rid: int | str, reason: str) -> None:
        if self.closed:
            return
        self.task_group.start_soon(self._send_cancel, rid, reason)

    async def _send_cancel(self, rid: int | str, reason: str) -> None:
        with anyio.move_on_after(5):
            try:
                await self.notify("notifications/cancelled", {"requestId": rid, "reason": reason})
            except MCPError as exc:
                logger.debug("could not send cancellation for request %s: %s", rid, exc)

    # -- incoming ------------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route one message from the server."""
        method = message.get("method")
        if method is None:
            rid = message.get("id")
            pending = self._pending.get(rid) if isinstance(rid, int | str) else None
            if pending is None:
                logger.warning(
                    "dropping a response for unknown or finished request id %r from %s",
                    rid,
                    self.endpoint,
                )
                return
            pending.resolve(message)
            return
        if not isinstance(method, str):
            logger.warning("dropping a message with a non-string method from %s", self.endpoint)
            return
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            logger.warning("dropping %s with non-object params from %s", method, self.endpoint)
            return
        if "id" in message:
            if self._handling >= MAX_SERVER_REQUESTS:
                await self._shed_server_request(method)
                return
            self._handling += 1
            self.task_group.start_soon(self._answer_server_request, message["id"], method, params)
        else:
            await self._on_notification(method, params)

    async def _on_notification(self, method: str, params: dict[str, Any] | None) -> None:
        try:
            if method == "notifications/progress" and params is not None:
                handler = self._progress.get(params.get("progressToken"))  # type: ignore[arg-type]
                if handler is not None:
                    await call_progress(handler, params)
            elif method == "notifications/message" and params is not None:
                await self.handlers.log(
                    mcp_types.LoggingMessageNotificationParams.model_validate(params)
                )
            elif method.endswith("/list_changed"):
                kind = method.removeprefix("notifications/").removesuffix("/list_changed")
                for hook in self.on_list_changed:
                    hook(kind)
                if self.handlers.list_changed is not None and kind in (
                    "tools",
                    "resources",
                    "prompts",
                ):
                    await self.handlers.list_changed(kind)  # type: ignore[arg-type]
            elif method == "notifications/resources/updated" and params is not None:
                uri = params.get("uri")
                if self.handlers.resource_updated is not None and isinstance(uri, str):
                    await self.handlers.resource_updated(uri)
            elif method == "notifications/cancelled" and params is not None:
                scope = self._server_requests.get(params.get("requestId"))  # type: ignore[arg-type]
                if scope is not None:
                    scope.cancel()
            if self.handlers.notification is not None:
                await self.handlers.notification(method, params)
        except Exception:
            logger.exception("handler for %s from %s raised", method, self.endpoint)

    async def _shed_server_request(self, method: str) -> None:
        """Drop a server request over the limit (no reply: a reply would cost a POST too)."""
        self._shed += 1
        if self._shed == 1:
            await self.events.emit(
                "server_requests_shed",
                endpoint=self.endpoint,
                session_id=self.session_id,
                method=method,
                limit=MAX_SERVER_REQUESTS,
                dropped=1,
            )

    async def _answer_server_request(
        self, rid: Any, method: str, params: dict[str, Any] | None
    ) -> None:
        try:
            await self._handle_server_request(rid, method, params)
        finally:
            self._handling -= 1
            if self._handling == 0 and self._shed > 1:
                # The burst is over: say how much of it was dropped.
                dropped, self._shed = self._shed, 0
                await self.events.emit(
                    "server_requests_shed",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                    method=method,
                    limit=MAX_SERVER_REQUESTS,
                    dropped=dropped,
                )
            elif self._handling == 0:
                self._shed = 0

    async def _handle_server_request(
        self, rid: Any, method: str, params: dict[str, Any] | None
    ) -> None:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        with anyio.CancelScope() as scope:
            if isinstance(rid, int | str):
                self._server_requests[rid] = scope
            try:
                reply["result"] = await self.handlers.answer(method, params)
            except ServerRequestError as exc:
                reply["error"] = {"code": exc.code, "message": exc.message}
                if exc.data is not None:
                    reply["error"]["data"] = exc.data
            except Exception as exc:
                logger.exception("handler for server request %s raised", method)
                reply["error"] = {"code": -32603, "message": f"client handler failed: {exc}"}
            finally:
                if isinstance(rid, int | str):
                    self._server_requests.pop(rid, None)
        if scope.cancelled_caught:
            logger.debug("server cancelled its request %r (%s)", rid, method)
            return
        try:
            with anyio.fail_after(30):
                await self._post_no_answer(reply, method)
        except (MCPError, TimeoutError) as exc:
            logger.warning("could not answer server request %s: %s", method, exc)

    # -- listen stream -------------------------------------------------------------

    def start_listening(self) -> anyio.Event:
        """Open the GET stream for server-initiated messages in the background.

        Returns an event set once the server has answered the first GET (a stream, 405,
        or an error): from then on, messages the server sends outside a request arrive.
        """
        ready = anyio.Event()
        self.task_group.start_soon(self._listen, ready)
        return ready

    async def _listen(self, ready: anyio.Event) -> None:
        cursor = StreamCursor()
        idle = 0
        with anyio.CancelScope() as scope:
            self._listen_scope = scope
            while not self.closed and idle < _LISTEN_MAX_IDLE_RECONNECTS:
                seen = cursor.last_event_id, cursor.events
                try:
                    try:
                        stream = await self.wire.get_stream(
                            self.era.headers("GET"), session_id=self.session_id, cursor=cursor
                        )
                    finally:
                        ready.set()
                    if stream is None:
                        logger.debug("%s does not offer a GET stream (405)", self.endpoint)
                        return
                    await self._pump(stream)
                except SessionExpiredError:
                    logger.info("listen stream: session %s is gone", self.session_id)
                    return
                except TransportError as exc:
                    logger.debug("listen stream on %s broke: %s", self.endpoint, exc)
                except Exception as exc:
                    # Anything else (a bug, bad bytes httpx or the parser choke on) is a
                    # broken stream too: it must never reach the caller's code.
                    logger.debug("listen stream on %s failed", self.endpoint, exc_info=True)
                    await self.events.emit(
                        "background_error",
                        endpoint=self.endpoint,
                        session_id=self.session_id,
                        task="listen",
                        error=f"{exc.__class__.__name__}: {exc}"[:500],
                    )
                progressed = (cursor.last_event_id, cursor.events) != seen
                idle = 0 if progressed else idle + 1
                if cursor.retry_ms is not None:
                    # At least the floor: the listen stream lives as long as the session, and a
                    # server polling it with `retry: 0` must not get a reconnect loop.
                    delay = max(cursor.retry_ms / 1000, _LISTEN_MIN_RECONNECT_SECONDS)
                else:
                    delay = random.uniform(0, min(30.0, 0.5 * 2**idle))
                await anyio.sleep(delay)
            if idle >= _LISTEN_MAX_IDLE_RECONNECTS:
                await self.events.emit(
                    "listen_lost",
                    endpoint=self.endpoint,
                    session_id=self.session_id,
                    reconnects=idle,
                )
                logger.info(
                    "listen stream on %s: giving up after %d idle reconnects", self.endpoint, idle
                )

    async def _pump(self, stream: AsyncGenerator[dict[str, Any], None]) -> None:
        async with aclosing(stream):
            async for incoming in stream:
                await self.dispatch(incoming)

    def stop(self) -> None:
        """Stop background work for this session (the listen stream)."""
        self.closed = True
        if self._listen_scope is not None:
            self._listen_scope.cancel()
