"""``ResilientClient``: the public face of the SDK, and only that.

Layers, bottom up: the HTTP wire (``_transports``), the exchange of one request
(``_exchange``), the protocol eras (``_eras``), the recovery layer (``_recovery``) and this
client on top. The client checks its options, owns the lifecycle (open, close, calls in
flight) and turns each public method into one request with a deadline; every decision
about endpoints, sessions, retries and "re-send or outcome unknown" is the recovery
layer's. Results come back as the protocol's own ``mcp_types`` models.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import httpx
import mcp_types
from pydantic import BaseModel, ValidationError

from ._background import Background
from ._classify import IDEMPOTENCY_META_KEY, idempotency_key_error
from ._eras import AUTO, Negotiator, StatelessSession, check_version
from ._eras._errors import HeaderMismatchError
from ._eras._input import with_input_rounds
from ._eras._stateless import fresh_until, usable_tools
from ._events import EventCallback, EventSink
from ._exchange import CURRENT_CALL as _FLIGHT
from ._exchange import InFlight as _Flight
from ._exchange import Session
from ._handlers import (
    ElicitationHandler,
    Handlers,
    ListChangedHandler,
    LogHandler,
    NotificationHandler,
    ProgressHandler,
    ResourceUpdatedHandler,
    RootsProvider,
    SamplingHandler,
    default_log_handler,
)
from ._policy import RetryPolicy
from ._recovery import (
    CLOSE_SECONDS,
    MAX_PAGES,
    ClientStats,
    ListedBytes,
    Recovery,
    end_session,
    new_key,
)
from ._results import ToolResult
from ._sse import DEFAULT_MAX_EVENT_BYTES
from ._telemetry import note_request_id, traced
from ._transports import default_connection_limit, http2_available
from .errors import (
    ClientClosedError,
    InvalidRequestError,
    MCPError,
    ProtocolError,
    RequestTimeoutError,
    ToolError,
)

__all__ = ["DEFAULT_TIMEOUT", "ClientStats", "ResilientClient", "ToolResult"]

logger = logging.getLogger("mcp_resilient")

DEFAULT_TIMEOUT = 60.0
"""Default deadline, in seconds, for each call (including the handshake)."""

DEFAULT_MAX_CONNECTIONS = default_connection_limit()
"""Requests in flight at once per endpoint on the defaults: from ``RLIMIT_NOFILE`` (each
HTTP/1.1 request holds a connection, so a file descriptor), 100 to 4096."""
_ANNOTATION_LEAD_SECONDS = 5.0
_ANNOTATION_LEAD_SHARE = 0.75
"""A call whose tool's annotations are unknown looks them up this long before its deadline
(at most this share of its whole time), so the deadline's verdict can use them."""
_VERSION = "0.1.0"

ModelT = TypeVar("ModelT", bound=BaseModel)


def _deadline(timeout: float | None) -> float:
    # On the event loop's clock (anyio.current_time), as cancel scope deadlines are.
    return math.inf if timeout is None else anyio.current_time() + timeout


def _remaining(deadline: float) -> float | None:
    """Seconds left until ``deadline`` (``None``: no deadline)."""
    return None if deadline == math.inf else max(0.0, deadline - anyio.current_time())


def _default_http_client() -> httpx.AsyncClient:
    # Reads are unbounded at the socket level on purpose: SSE streams idle for long
    # stretches. Every call is bounded by its own deadline instead. The pool itself has
    # no limit: requests are bounded per endpoint (max_connections) before they reach it,
    # and a request waiting there waits within its call's deadline.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=None),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        http2=http2_available(),
    )


MAX_STATE_ID_LENGTH = 255


def _visible_ascii(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and all("\x21" <= ch <= "\x7e" for ch in text)


class ResilientClient:
    """An MCP client over Streamable HTTP that keeps working when servers fail.

    Use it as an async context manager:

    ```python
    async with ResilientClient("http://127.0.0.1:8000/mcp") as client:
        result = await client.call_tool("add", {"a": 1, "b": 2})
    ```

    Args:
        endpoints: One MCP endpoint URL, or several for failover.
        headers: Extra HTTP headers sent with every request (e.g. ``Authorization``).
        timeout: Default deadline in seconds for each call; ``None`` waits forever.
        auth: Any ``httpx.Auth``; applied only to the configured endpoints.
        client_info: The ``Implementation`` sent in ``initialize``.
        protocol_version: ``"auto"`` (default): the 2026-07-28 era when the server speaks it,
            else the handshake; or pin one version of either era (``STATELESS_VERSIONS``,
            ``HANDSHAKE_VERSIONS``).
        http_client: Bring your own ``httpx.AsyncClient`` (not closed by us).
        log_handler: Receives server log messages (default: the ``mcp_resilient.server`` logger).
            In the 2026-07-28 era, passing one asks for every level (``set_logging_level``
            narrows it); without one, the server sends no log messages.
        list_changed_handler: Told when the server's tools, resources or prompts change.
        resource_updated_handler: Told the URI of a resource subscribed to with
            ``subscribe_resource`` when the server says it changed.
        notification_handler: Receives every server notification.
        sampling_handler: Answers ``sampling/createMessage``.
        elicitation_handler: Answers ``elicitation/create``; accepted answers get schema defaults.
        roots: The client's roots (a list or an async function).
        on_event: Callback for client events (session started/lost, retries...).
        max_event_bytes: Cap on one SSE event or JSON body.
        listen: Open the GET stream for server-initiated messages after the handshake (in the
            2026-07-28 era: a ``subscriptions/listen`` stream, if a ``list_changed_handler``
            or ``notification_handler`` asks for change notifications).
        retry: Attempts, backoff, retry budget and endpoint health (``RetryPolicy()``).
        resume_tool: Tool called with ``old_session_id`` on a new session to carry the old
            session's state over (only if the server lists it); ``None`` turns it off.
        trust_annotations: Let a tool's ``readOnlyHint``/``idempotentHint`` (from the last
            ``list_tools``) allow re-sending it after an ambiguous failure.
        on_resume_failure: ``"raise"``: the next call raises ``ResumeFailedError`` once;
            ``"ignore"``: only the ``resume_failed`` event and log line.
        max_connections: Requests in flight at once per endpoint on the client's own HTTP
            stack (``None``: no limit); more wait their turn within their deadline. The
            default follows the file-descriptor limit (``docs/connections.md``). Only
            without ``http_client``.
        state_id: Names this client's state on servers built with the kit, sent in
            ``params._meta`` of every 2026-07-28 request (docs/exactly-once.md): a random
            id by default, stable for the life of the client; set it (e.g. to a
            conversation id) to share state across clients or processes.

    The client may be opened in one task and closed in another (app lifespans, fixtures,
    ``asyncio.wait_for``), as an ``httpx.AsyncClient``. It runs on asyncio. Once closed it
    cannot be reopened: make a new one.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        auth: httpx.Auth | None = None,
        client_info: mcp_types.Implementation | None = None,
        protocol_version: str = AUTO,
        http_client: httpx.AsyncClient | None = None,
        log_handler: LogHandler | None = None,
        list_changed_handler: ListChangedHandler | None = None,
        resource_updated_handler: ResourceUpdatedHandler | None = None,
        notification_handler: NotificationHandler | None = None,
        sampling_handler: SamplingHandler | None = None,
        elicitation_handler: ElicitationHandler | None = None,
        roots: RootsProvider | None = None,
        on_event: EventCallback | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        listen: bool = True,
        retry: RetryPolicy | None = None,
        resume_tool: str | None = "resume_session",
        trust_annotations: bool = True,
        on_resume_failure: Literal["raise", "ignore"] = "raise",
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        state_id: str | None = None,
    ) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ValueError("ResilientClient needs at least one endpoint URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} is not an http:// or https:// URL")
        check_version(protocol_version)
        if max_event_bytes <= 0:
            raise ValueError("max_event_bytes must be positive")
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1 (or None for no limit)")
        if http_client is not None and max_connections != DEFAULT_MAX_CONNECTIONS:
            raise ValueError(
                "max_connections sets the limit of the client's own connection pool; with"
                " http_client=, set limits=httpx.Limits(...) on that client instead"
            )
        if state_id is not None and not _visible_ascii(state_id, MAX_STATE_ID_LENGTH):
            raise ValueError(
                f"state_id must be 1 to {MAX_STATE_ID_LENGTH} visible ASCII characters"
            )
        self._state_id = state_id or uuid.uuid4().hex
        self._max_connections = max_connections
        self._closed = False
        self._flights: set[_Flight] = set()
        self.endpoints: tuple[str, ...] = tuple(urls)
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._client_info = client_info or mcp_types.Implementation(
            name="mcp-resilient", version=_VERSION
        )
        self._own_http = http_client is None
        self._http = http_client
        self._handlers = Handlers(
            log=log_handler or default_log_handler,
            list_changed=list_changed_handler,
            resource_updated=resource_updated_handler,
            notification=notification_handler,
            sampling=sampling_handler,
            elicitation=elicitation_handler,
            roots=roots,
        )
        self._events = EventSink(on_event)
        self.stats = ClientStats()
        self._recovery = Recovery(
            self.endpoints,
            policy=retry or RetryPolicy(),
            headers=self._headers,
            auth=auth,
            max_event_bytes=max_event_bytes,
            handlers=self._handlers,
            events=self._events,
            negotiator=Negotiator(
                protocol_version,
                client_info=self._client_info,
                capabilities=self._handlers.capabilities(),
                tool=lambda name: self._recovery.tools.get(name),
                wants_notifications=listen
                and (list_changed_handler is not None or notification_handler is not None),
                # 2026-07-28 servers log only to requests that ask; a log handler of one's
                # own asks.
                log_level="debug" if log_handler is not None else None,
                state_id=self._state_id,
            ),
            listen=listen,
            resume_tool=resume_tool,
            trust_annotations=trust_annotations,
            on_resume_failure=on_resume_failure,
            stats=self.stats,
            list_tools=lambda timeout: self.list_tools(timeout=timeout),
        )
        self._stack: AsyncExitStack | None = None

    @property
    def state_id(self) -> str:
        """The id of this client's state on kit servers (2026-07-28 era); read-only."""
        return self._state_id

    # The recovery layer's knobs, settable on the client as before.

    @property
    def retry_policy(self) -> RetryPolicy:
        """Attempts, backoff, retry budget and endpoint health."""
        return self._recovery.policy

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy) -> None:
        self._recovery.policy = policy

    @property
    def resume_tool(self) -> str | None:
        """The tool that carries a lost session's state to its successor (``None``: off)."""
        return self._recovery.resume_tool

    @resume_tool.setter
    def resume_tool(self, name: str | None) -> None:
        self._recovery.resume_tool = name

    @property
    def trust_annotations(self) -> bool:
        """Whether a tool's annotations may allow re-sending it after an ambiguous failure."""
        return self._recovery.trust_annotations

    @trust_annotations.setter
    def trust_annotations(self, trust: bool) -> None:
        self._recovery.trust_annotations = trust

    @property
    def on_resume_failure(self) -> Literal["raise", "ignore"]:
        """``"raise"`` or ``"ignore"`` a failed resume of the lost session's state."""
        return self._recovery.on_resume_failure

    @on_resume_failure.setter
    def on_resume_failure(self, mode: Literal["raise", "ignore"]) -> None:
        self._recovery.on_resume_failure = mode

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> ResilientClient:
        if self._closed:
            raise ClientClosedError(
                "this ResilientClient was closed and cannot be reopened",
                hint="Create a new ResilientClient (as with httpx.AsyncClient)",
            )
        if self._stack is not None:
            raise RuntimeError("ResilientClient is already open")
        recovery = self._recovery
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._http is None:
                self._http = _default_http_client()
            if self._own_http:
                stack.push_async_callback(self._close_own_http)
            stack.push_async_callback(recovery.close_transport)
            # Background tasks (listen stream, replies, probes) belong to the client, not to
            # this task: no cancel scope spans open to close, so either may run in any task.
            background = Background(self._events)
            stack.push_async_callback(background.aclose)
            recovery.attach(
                self._http,
                background,
                own_http=self._own_http,
                max_connections=self._max_connections,
            )
            self._stack = stack
            deadline = _deadline(self.timeout)
            try:
                with anyio.fail_after(self.timeout if self.timeout is not None else math.inf):
                    await recovery.ensure_session(deadline)
            except RequestTimeoutError:
                raise
            except TimeoutError:
                raise RequestTimeoutError(
                    f"could not open a session within {self.timeout:g} s",
                    endpoint=", ".join(self.endpoints),
                ) from None
        except BaseException:
            self._stack = None
            recovery.detach()
            session, recovery.session = recovery.session, None
            with anyio.CancelScope(shield=True):
                if session is not None:
                    await end_session(session)
                with anyio.move_on_after(CLOSE_SECONDS * 2):
                    await stack.aclose()
            raise
        return self

    async def _close_own_http(self) -> None:
        # Forget it too: a failed open may be tried again with a fresh pool.
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the session (DELETE) and release connections. Safe to call twice.

        May be called from any task. Calls still in flight end with ``ClientClosedError``.
        """
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closed = True
        self._recovery.detach()
        for flight in list(self._flights):
            if flight.scope is not None:
                flight.scope.cancel()  # the call's own task raises ClientClosedError
        session, self._recovery.session = self._recovery.session, None
        with anyio.CancelScope(shield=True):
            if session is not None:
                await end_session(session)
                await self._events.emit(
                    "closed", endpoint=session.endpoint, session_id=session.session_id
                )
            with anyio.move_on_after(CLOSE_SECONDS * 2):
                await stack.aclose()

    def _require_session(self) -> Session:
        if self._recovery.session is None:
            if self._closed:
                raise ClientClosedError(
                    "the client was closed", hint="Create a new ResilientClient to go on"
                )
            raise ClientClosedError(
                "the client is not open", hint="Use it inside 'async with ResilientClient(...)'"
            )
        return self._recovery.session

    # -- facts about the connection ------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The current ``Mcp-Session-Id`` (``None`` if the server does not use sessions)."""
        return self._recovery.session_id

    @property
    def endpoint(self) -> str | None:
        """The endpoint calls go to: the session's (handshake era), or in the 2026-07-28
        era, where each request picks its endpoint, the one that served the last call."""
        return self._recovery.endpoint

    @property
    def last_endpoint(self) -> str | None:
        """The endpoint URL that answered the last request (after any retry or failover)."""
        return self._recovery.last_endpoint

    @property
    def protocol_version(self) -> str | None:
        """The negotiated protocol version."""
        session = self._recovery.session
        return session.era.protocol_version if session else None

    @property
    def server_info(self) -> mcp_types.Implementation | None:
        """The server's name and version from ``initialize``."""
        return self._recovery.init.server_info if self._recovery.init else None

    @property
    def server_capabilities(self) -> mcp_types.ServerCapabilities | None:
        """What the server said it can do."""
        return self._recovery.init.capabilities if self._recovery.init else None

    @property
    def instructions(self) -> str | None:
        """The server's usage instructions, if it sent any."""
        return self._recovery.init.instructions if self._recovery.init else None

    # -- requests ------------------------------------------------------------------

    @traced  # OpenTelemetry: one span per call, trace context in params._meta
    async def _request(
        self,
        method: str,
        params: dict[str, Any] | None,
        model: type[ModelT],
        *,
        timeout: float | Literal["default"] | None = "default",
        progress_handler: ProgressHandler | None = None,
        idempotent: bool | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> ModelT:
        """One request under one deadline (``deadline``: a caller's, already running)."""
        if self._stack is None:
            self._require_session()
        limit = self.timeout if timeout == "default" else timeout
        if deadline is None:
            deadline = _deadline(limit)
        flight = _Flight()
        token = _FLIGHT.set(flight)
        try:
            # A bare cancel scope: the deadline of the whole call, retries and waits
            # included; `aclose` cancels it too (from any task).
            with anyio.CancelScope(deadline=deadline) as scope:
                flight.scope = scope
                self._flights.add(flight)
                try:
                    raw, session = await with_input_rounds(
                        method,
                        params,
                        lambda sent: self._recovery.call(
                            method, sent, deadline, progress_handler, idempotent, retry
                        ),
                        self._handlers,
                    )
                except Exception as exc:
                    if self._closed:
                        raise self._recovery.closed_in_flight(
                            method, params, idempotent, flight
                        ) from exc
                    raise
        finally:
            self._flights.discard(flight)
            _FLIGHT.reset(token)
            note_request_id(flight.request_id)  # for the call's span (jsonrpc.request.id)
        if scope.cancelled_caught:
            if self._closed:
                raise self._recovery.closed_in_flight(method, params, idempotent, flight) from None
            raise await self._recovery.deadline_passed(
                method, params, idempotent, limit, flight
            ) from None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise ProtocolError(
                f"server sent an invalid {method} result ({exc.error_count()} validation errors:"
                f" {exc.errors()[0]['msg']})",
                endpoint=session.endpoint,
                session_id=session.session_id,
            ) from None

    async def _paginate(
        self,
        method: str,
        model: type[ModelT],
        field: str,
        timeout: float | Literal["default"] | None,
        on_page: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        listed = ListedBytes(method)
        limit = self.timeout if timeout == "default" else timeout
        with anyio.CancelScope(deadline=_deadline(limit)) as scope:
            for _ in range(MAX_PAGES):
                params = {"cursor": cursor} if cursor is not None else None
                page = await self._request(method, params, model, timeout=None)
                listed.add(len(page.model_dump_json(by_alias=True)), self.endpoint, self.session_id)
                if on_page is not None:
                    on_page(page)
                items.extend(getattr(page, field))
                cursor = getattr(page, "next_cursor", None)
                if cursor is None:
                    return items
                if cursor in seen:
                    raise ProtocolError(
                        f"server repeated pagination cursor {cursor!r} for {method}",
                        endpoint=self.endpoint,
                        session_id=self.session_id,
                    )
                seen.add(cursor)
        if scope.cancelled_caught:
            raise RequestTimeoutError(
                f"{method} did not complete within {limit:g} s ({listed.pages} pages read)",
                endpoint=self.endpoint,
                session_id=self.session_id,
                hint="Pass a larger timeout= if the server is just slow",
            )
        raise ProtocolError(
            f"{method} returned more than {MAX_PAGES} pages", endpoint=self.endpoint
        )

    async def list_tools(
        self, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[mcp_types.Tool]:
        """All the server's tools (every page). Also caches them, for as long as ``ttlMs`` says.

        In the 2026-07-28 era, tools with invalid ``x-mcp-header`` annotations are left out.
        """
        pages: list[mcp_types.ListToolsResult] = []
        tools: list[mcp_types.Tool] = await self._paginate(
            "tools/list", mcp_types.ListToolsResult, "tools", timeout, pages.append
        )
        if self._stateless():
            tools = usable_tools(tools)
        self._recovery.tools = {tool.name: tool for tool in tools}
        self._recovery.tools_fresh_until = fresh_until(pages, time.monotonic())
        return tools

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        progress_handler: ProgressHandler | None = None,
        timeout: float | Literal["default"] | None = "default",
        meta: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        raise_on_error: bool = False,
    ) -> ToolResult:
        """Call a tool. A tool-level failure comes back with ``is_error=True``, not raised
        (``raise_on_error=True`` raises it as ``ToolError``).

        After an ambiguous failure (sent, answer lost) the call is re-sent only if it is
        safe: ``idempotent=True``, or (when ``None``) the tool's annotations say read-only
        or idempotent, or the server honours idempotency keys (docs/exactly-once.md).
        Otherwise ``OutcomeUnknownError``. ``idempotent=False`` forbids re-sending after
        the request went out. A call still running near its deadline whose tool's
        annotations are unknown lists them alongside, so a read-only tool's timeout is a
        plain ``RequestTimeoutError`` even if ``list_tools`` was never called.

        Every call carries an idempotency key in ``params._meta``, the same on every
        re-send; ``idempotency_key`` sets it (e.g. a business operation id: 1 to 255
        visible ASCII characters, else ``InvalidRequestError``), else a random one is made.

        ``retry``: this call's attempts and backoff, instead of the client's policy.

        Returns a ``ToolResult``: the ``mcp_types.CallToolResult``, plus ``data`` (the
        structured result, unwrapped) and ``endpoint`` (where it ran).
        """
        if idempotency_key is not None:
            problem = idempotency_key_error(idempotency_key)
            if problem is not None:
                raise InvalidRequestError(
                    f"idempotency_key rejected before sending: {problem}",
                    hint="Use an id such as a UUID or 'order-1234'",
                )
        params: dict[str, Any] = {"name": name, "arguments": dict(arguments or {})}
        params["_meta"] = {**(meta or {}), IDEMPOTENCY_META_KEY: idempotency_key or new_key()}
        limit = self.timeout if timeout == "default" else timeout
        deadline = _deadline(limit)
        watch = self._watch_annotations(name, deadline) if idempotent is None else None
        try:
            result = await self._call_tool(
                name, params, limit, deadline, progress_handler, idempotent, retry
            )
        finally:
            if watch is not None:
                watch.set()
        tool = self._recovery.tools.get(name)
        answered = ToolResult.of(
            result,
            endpoint=self._recovery.last_endpoint,
            output_schema=tool.output_schema if tool is not None else None,
        )
        if raise_on_error and answered.is_error:
            text = " ".join(
                block.text for block in answered.content if isinstance(block, mcp_types.TextContent)
            )
            raise ToolError(
                f"tool {name!r} reported an error: {text or 'no detail'}",
                tool=name,
                result=answered,
                endpoint=answered.endpoint,
            )
        return answered

    async def _call_tool(
        self,
        name: str,
        params: dict[str, Any],
        limit: float | None,
        deadline: float,
        progress_handler: ProgressHandler | None,
        idempotent: bool | None,
        retry: RetryPolicy | None,
    ) -> mcp_types.CallToolResult:
        for attempt in (1, 2):
            try:
                return await self._request(
                    "tools/call",
                    params,
                    mcp_types.CallToolResult,
                    timeout=limit,
                    deadline=deadline,
                    progress_handler=progress_handler,
                    idempotent=idempotent,
                    retry=retry,
                )
            except HeaderMismatchError as exc:
                # The request was refused before it ran. The spec's SHOULD: the tool's
                # x-mcp-header schema may have changed, so list the tools again and retry
                # once with headers made from the fresh schema.
                if attempt == 2:
                    raise ProtocolError(
                        f"{exc.message}; still refused after listing the tools again",
                        endpoint=exc.endpoint,
                        hint="A proxy may rewrite or drop Mcp-* headers",
                    ) from exc
                logger.info("tools/call %r: header mismatch, listing tools again", name)
                await self.list_tools(timeout=_remaining(deadline))
        raise AssertionError("unreachable")  # pragma: no cover

    def _watch_annotations(self, name: str, deadline: float) -> anyio.Event | None:
        """Near the deadline, look up ``name``'s annotations if they are still unknown.

        At the deadline the client must say whether the call may have run twice over: a
        plain timeout (read-only or idempotent) or ``OutcomeUnknownTimeoutError``. That
        needs the annotations, and there is no time left to list them then. So a call
        still running close to its deadline lists the tools alongside (within the same
        deadline); a call that ends sooner costs nothing. Returns the event that stops it.
        """
        recovery = self._recovery
        background = recovery.background
        if deadline == math.inf or not recovery.trust_annotations or background is None:
            return None
        if recovery.tools and time.monotonic() < recovery.tools_fresh_until:
            return None  # a fresh list, with or without this tool: listing again tells nothing
        start = anyio.current_time()
        lead = min(_ANNOTATION_LEAD_SECONDS, _ANNOTATION_LEAD_SHARE * (deadline - start))
        stop = anyio.Event()

        async def look_up() -> None:
            with anyio.move_on_after(max(0.0, deadline - lead - anyio.current_time())):
                await stop.wait()
                return  # the call ended first
            if name in recovery.tools and time.monotonic() < recovery.tools_fresh_until:
                return
            try:
                await self.list_tools(timeout=_remaining(deadline))
            except MCPError as exc:
                logger.info("could not list tools to read %r's annotations: %s", name, exc)

        background.start_soon(look_up, name="annotations-before-deadline")
        return stop

    async def list_resources(
        self, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[mcp_types.Resource]:
        """All the server's resources (every page)."""
        return await self._paginate(
            "resources/list", mcp_types.ListResourcesResult, "resources", timeout
        )

    async def list_resource_templates(
        self, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[mcp_types.ResourceTemplate]:
        """All the server's resource templates (every page)."""
        return await self._paginate(
            "resources/templates/list",
            mcp_types.ListResourceTemplatesResult,
            "resource_templates",
            timeout,
        )

    async def read_resource(
        self, uri: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> mcp_types.ReadResourceResult:
        """Read one resource by URI."""
        return await self._request(
            "resources/read", {"uri": str(uri)}, mcp_types.ReadResourceResult, timeout=timeout
        )

    async def subscribe_resource(
        self, uri: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> None:
        """Be told (``resource_updated_handler``) when the resource at ``uri`` changes.

        Handshake era: ``resources/subscribe``, sent again on every new session after a
        failover. 2026-07-28 era: the URI joins the ``resourceSubscriptions`` of the
        ``subscriptions/listen`` stream, which is reopened; returns once the server has
        acknowledged it. Raises ``ProtocolError`` if the server does not offer
        subscriptions (``resources.subscribe``) or does not agree to this one.
        """
        self._check_subscribe(uri)
        subscriptions = self._recovery.resource_subscriptions
        if self._stateless():
            added = uri not in subscriptions
            if added:
                subscriptions.append(uri)
            try:
                await self._relisten(uri, timeout)
            except BaseException:
                if added and uri in subscriptions:
                    subscriptions.remove(uri)
                    self._recovery.relisten()
                raise
            return
        await self._request(
            "resources/subscribe",
            {"uri": uri},
            mcp_types.EmptyResult,
            timeout=timeout,
            idempotent=True,
        )
        if uri not in subscriptions:
            subscriptions.append(uri)

    async def unsubscribe_resource(
        self, uri: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> None:
        """Stop the updates of ``subscribe_resource(uri)`` (and no longer renew it)."""
        subscriptions = self._recovery.resource_subscriptions
        if uri in subscriptions:
            subscriptions.remove(uri)
        if self._stateless():
            await self._relisten(None, timeout)
            return
        await self._request(
            "resources/unsubscribe",
            {"uri": uri},
            mcp_types.EmptyResult,
            timeout=timeout,
            idempotent=True,
        )

    def _check_subscribe(self, uri: str) -> None:
        if self._stack is None:
            self._require_session()
        init = self._recovery.init
        resources = init.capabilities.resources if init is not None else None
        if resources is None or not resources.subscribe:
            raise ProtocolError(
                f"cannot subscribe to {uri}: the server does not offer resource subscriptions"
                " (capabilities.resources.subscribe)",
                endpoint=self._recovery.endpoint,
                hint="Poll read_resource() instead",
            )

    async def _relisten(self, uri: str | None, timeout: float | Literal["default"] | None) -> None:
        """Reopen the stateless listen stream; wait for its acknowledgement (of ``uri``)."""
        limit = self.timeout if timeout == "default" else timeout
        deadline = _deadline(limit)
        with anyio.move_on_after(_remaining(deadline) if limit is not None else math.inf):
            await self._recovery.ensure_session(deadline)
            session = self._recovery.session
            acked = self._recovery.relisten()
            if acked is None or not isinstance(session, StatelessSession):
                return  # the era changed meanwhile: a new session subscribes as it opens
            if uri is None:
                return  # nothing to wait for: the server stops sending what was dropped
            await acked.wait()
            agreed = session.acknowledged.get("resourceSubscriptions")
            if not isinstance(agreed, list) or uri not in agreed:
                raise ProtocolError(
                    f"the server did not agree to send updates of {uri}"
                    " (not in the acknowledged resourceSubscriptions)",
                    endpoint=session.endpoint,
                )
            return
        raise RequestTimeoutError(
            f"the subscriptions/listen stream was not acknowledged within {limit:g} s",
            endpoint=self._recovery.endpoint,
        )

    async def list_prompts(
        self, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[mcp_types.Prompt]:
        """All the server's prompts (every page)."""
        return await self._paginate("prompts/list", mcp_types.ListPromptsResult, "prompts", timeout)

    async def get_prompt(
        self,
        name: str,
        arguments: Mapping[str, str] | None = None,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> mcp_types.GetPromptResult:
        """Render a prompt with its arguments."""
        params: dict[str, Any] = {"name": name}
        if arguments:
            params["arguments"] = {k: str(v) for k, v in arguments.items()}
        return await self._request(
            "prompts/get", params, mcp_types.GetPromptResult, timeout=timeout
        )

    async def ping(self, *, timeout: float | Literal["default"] | None = "default") -> None:
        """Check that the server answers (``server/discover`` in the 2026-07-28 era: no ping)."""
        method = "server/discover" if self._stateless() else "ping"
        await self._request(method, None, mcp_types.EmptyResult, timeout=timeout)

    async def set_logging_level(
        self,
        level: mcp_types.LoggingLevel,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> None:
        """Ask the server to send log messages at ``level`` and above.

        In the 2026-07-28 era the level rides on every later request (``_meta``).
        """
        self._recovery.negotiator.settings.log_level = level
        if self._stateless():
            return
        await self._request(
            "logging/setLevel", {"level": level}, mcp_types.EmptyResult, timeout=timeout
        )

    async def send_roots_list_changed(
        self, *, timeout: float | Literal["default"] | None = "default"
    ) -> None:
        """Tell the server the client's roots changed (it will ask again with roots/list).

        Nothing to send in the 2026-07-28 era: the server asks for roots with each request.
        """
        session = self._require_session()
        if self._stateless():
            return
        limit = self.timeout if timeout == "default" else timeout
        with anyio.CancelScope(deadline=_deadline(limit)) as scope:
            await session.notify("notifications/roots/list_changed")
        if scope.cancelled_caught:
            raise RequestTimeoutError(
                f"notifications/roots/list_changed was not accepted within {limit:g} s",
                endpoint=session.endpoint,
                session_id=session.session_id,
                hint="Pass a larger timeout= if the server is just slow",
            )

    def cached_tool(self, name: str) -> mcp_types.Tool | None:
        """The tool as last listed by ``list_tools``.

        ``None`` if not listed yet, or after the server said its tools changed. A list
        past the ``ttlMs`` the server gave with it is still returned here (it is what was
        last listed); the client's own re-send decisions list the tools again instead of
        trusting a stale list (see ``tools_fresh``).
        """
        return self._recovery.tools.get(name)

    @property
    def tools_fresh(self) -> bool:
        """Is the last tools list within the ``ttlMs`` the server gave with it?"""
        return time.monotonic() < self._recovery.tools_fresh_until

    def _stateless(self) -> bool:
        """Is the current connection in the 2026-07-28 era?"""
        return self._recovery.stateless()
