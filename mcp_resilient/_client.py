"""``ResilientClient``: the public face of the SDK.

A small surface over private parts: the HTTP wire (``_transports``), the protocol
era (``_eras``) and the JSON-RPC session (``_session``). Results come back as the
protocol's own ``mcp_types`` models.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import httpx
import mcp_types
from pydantic import BaseModel, ValidationError

from ._classify import SAFE_METHODS, Failure, classify, tool_is_safe
from ._eras import HANDSHAKE_VERSIONS, HandshakeEra
from ._events import EventCallback, EventSink
from ._handlers import (
    ElicitationHandler,
    Handlers,
    ListChangedHandler,
    LogHandler,
    NotificationHandler,
    ProgressHandler,
    RootsProvider,
    SamplingHandler,
    default_log_handler,
)
from ._policy import RetryPolicy, TokenBucket
from ._pool import Endpoint, EndpointPool
from ._session import Session
from ._sse import DEFAULT_MAX_EVENT_BYTES
from ._transports import SSE_ACCEPT, HTTPWire
from .errors import (
    ClientClosedError,
    ConnectError,
    HTTPStatusError,
    MCPError,
    OutcomeUnknownError,
    ProtocolError,
    RequestTimeoutError,
    ResumeFailedError,
)

__all__ = ["DEFAULT_TIMEOUT", "ClientStats", "ResilientClient"]

logger = logging.getLogger("mcp_resilient")

DEFAULT_TIMEOUT = 60.0
"""Default deadline, in seconds, for each call (including the handshake)."""

_MAX_PAGES = 10_000
_LISTEN_READY_SECONDS = 5.0
_VERSION = "0.1.0"

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(slots=True)
class ClientStats:
    """Counters for dashboards and tests: what the client had to do to keep going."""

    attempts: int = 0
    retries: int = 0
    failovers: int = 0
    sessions: int = 0
    sessions_lost: int = 0
    resumes: int = 0
    resume_failures: int = 0
    outcome_unknown: int = 0


@dataclass(slots=True, frozen=True)
class _Lost:
    """The session we lost, so its successor can take over its state."""

    session_id: str | None
    endpoint: str


def _deadline(timeout: float | None) -> float:
    # On the event loop's clock (anyio.current_time), as cancel scope deadlines are.
    return math.inf if timeout is None else anyio.current_time() + timeout


def _default_http_client() -> httpx.AsyncClient:
    # Reads are unbounded at the socket level on purpose: SSE streams idle for long
    # stretches. Every call is bounded by its own deadline instead.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=30.0),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )


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
        protocol_version: The version offered in ``initialize`` (newest by default).
        http_client: Bring your own ``httpx.AsyncClient`` (not closed by us).
        log_handler: Receives server log messages (default: the ``mcp_resilient.server`` logger).
        list_changed_handler: Told when the server's tools, resources or prompts change.
        notification_handler: Receives every server notification.
        sampling_handler: Answers ``sampling/createMessage``.
        elicitation_handler: Answers ``elicitation/create``; accepted answers get schema defaults.
        roots: The client's roots (a list or an async function).
        on_event: Callback for client events (session started/lost, retries...).
        max_event_bytes: Cap on one SSE event or JSON body.
        listen: Open the GET stream for server-initiated messages after the handshake.
        retry: Attempts, backoff, retry budget and endpoint health (``RetryPolicy()``).
        resume_tool: Tool called with ``old_session_id`` on a new session to carry the old
            session's state over (only if the server lists it); ``None`` turns it off.
        trust_annotations: Let a tool's ``readOnlyHint``/``idempotentHint`` (from the last
            ``list_tools``) allow re-sending it after an ambiguous failure.
        on_resume_failure: ``"raise"``: the next call raises ``ResumeFailedError`` once;
            ``"ignore"``: only the ``resume_failed`` event and log line.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        auth: httpx.Auth | None = None,
        client_info: mcp_types.Implementation | None = None,
        protocol_version: str = HANDSHAKE_VERSIONS[0],
        http_client: httpx.AsyncClient | None = None,
        log_handler: LogHandler | None = None,
        list_changed_handler: ListChangedHandler | None = None,
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
    ) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ValueError("ResilientClient needs at least one endpoint URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} is not an http:// or https:// URL")
        if protocol_version not in HANDSHAKE_VERSIONS:
            raise ValueError(
                f"protocol_version must be one of {', '.join(HANDSHAKE_VERSIONS)},"
                f" not {protocol_version!r}"
            )
        if max_event_bytes <= 0:
            raise ValueError("max_event_bytes must be positive")
        self.endpoints: tuple[str, ...] = tuple(urls)
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._auth = auth
        self._client_info = client_info or mcp_types.Implementation(
            name="mcp-resilient", version=_VERSION
        )
        self._offered_version = protocol_version
        self._own_http = http_client is None
        self._http = http_client
        self._handlers = Handlers(
            log=log_handler or default_log_handler,
            list_changed=list_changed_handler,
            notification=notification_handler,
            sampling=sampling_handler,
            elicitation=elicitation_handler,
            roots=roots,
        )
        self._events = EventSink(on_event)
        self._max_event_bytes = max_event_bytes
        self._listen = listen
        self.retry_policy = retry or RetryPolicy()
        self.resume_tool = resume_tool
        self.trust_annotations = trust_annotations
        self.on_resume_failure = on_resume_failure
        self.stats = ClientStats()
        self._pool = EndpointPool(self.endpoints, self.retry_policy)
        self._bucket = TokenBucket(self.retry_policy.budget)
        self._lost: _Lost | None = None
        self._resume_error: ResumeFailedError | None = None
        self._stack: AsyncExitStack | None = None
        self._session: Session | None = None
        self._init: mcp_types.InitializeResult | None = None
        self._tools: dict[str, mcp_types.Tool] = {}

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> ResilientClient:
        if self._stack is not None:
            raise RuntimeError("ResilientClient is already open")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._http is None:
                self._http = _default_http_client()
            if self._own_http:
                stack.push_async_callback(self._http.aclose)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            self._task_group = task_group
            self._recover_lock = anyio.Lock()
            self._stack = stack
            deadline = _deadline(self.timeout)
            try:
                with anyio.fail_after(self.timeout if self.timeout is not None else math.inf):
                    await self._ensure_session(deadline)
            except RequestTimeoutError:
                raise
            except TimeoutError:
                raise RequestTimeoutError(
                    f"could not open a session within {self.timeout:g} s",
                    endpoint=", ".join(self.endpoints),
                ) from None
        except BaseException:
            self._stack = None
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the session (DELETE) and release connections. Safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        session, self._session = self._session, None
        if session is not None:
            session.stop()
            with anyio.move_on_after(5, shield=True):
                try:
                    await session.era.close(session)
                except MCPError as exc:
                    logger.debug("DELETE on close failed: %s", exc)
            await self._events.emit(
                "closed", endpoint=session.endpoint, session_id=session.session_id
            )
        await stack.aclose()

    async def _ensure_session(self, deadline: float) -> Session:
        """The current session, or a new one (shared by every caller waiting on it)."""
        session = self._session
        if session is not None:
            return session
        async with self._recover_lock:
            if self._session is None:
                await self._establish(deadline)
            assert self._session is not None
            return self._session

    async def _establish(self, deadline: float) -> None:
        """Open a session on the best endpoint, retrying with backoff within the deadline."""
        lost = self._lost
        policy = self.retry_policy
        attempt = 0
        first_failed: str | None = None
        while True:
            attempt += 1
            endpoint = self._pool.pick(avoid=lost.endpoint if lost else None)
            try:
                session = await self._open_session(endpoint.url)
                break
            except RequestTimeoutError:
                raise
            except MCPError as exc:
                if classify(exc) is Failure.ANSWERED:
                    raise
                first_failed = first_failed or endpoint.url
                await self._endpoint_failed(endpoint)
                if policy.max_attempts is not None and attempt >= policy.max_attempts:
                    raise ConnectError(
                        f"could not open a session after {attempt} attempts over"
                        f" {len(self.endpoints)} endpoint(s); last error at {endpoint.url}:"
                        f" {exc.message}",
                        endpoint=", ".join(self.endpoints),
                        hint="Check that at least one server is running",
                    ) from exc
                await self._backoff(attempt, exc, deadline, "initialize", endpoint.url, None)
        if self._pool.record_success(endpoint):
            await self._events.emit("endpoint_up", endpoint=endpoint.url)
        self.stats.sessions += 1
        await self._events.emit(
            "session_started",
            endpoint=session.endpoint,
            session_id=session.session_id,
            protocol_version=session.era.protocol_version,
        )
        if lost is not None:
            if lost.endpoint != session.endpoint:
                self.stats.failovers += 1
                await self._events.emit(
                    "failover",
                    endpoint=session.endpoint,
                    session_id=session.session_id,
                    from_endpoint=lost.endpoint,
                )
            # The session becomes current only once the old state is in it: calls waiting
            # on the recovery lock must not run on a half-made session. If this caller's
            # deadline cuts the resume short, `_lost` stays set and the next caller
            # starts over (a new session, and the resume from the original old id).
            await self._carry_state(session, lost.session_id)
            self._lost = None
        elif first_failed is not None and first_failed != session.endpoint:
            # Opening moved on from an endpoint that failed: that is a failover too.
            self.stats.failovers += 1
            await self._events.emit(
                "failover",
                endpoint=session.endpoint,
                session_id=session.session_id,
                from_endpoint=first_failed,
            )
        self._session = session
        if self._listen:
            ready = session.start_listening()
            # Wait (briefly) for the listen stream, so a server that sends requests outside
            # any call (e.g. elicitation on the GET stream) finds it open from the first call.
            with anyio.move_on_after(
                min(_LISTEN_READY_SECONDS, max(0.0, deadline - anyio.current_time()))
            ):
                await ready.wait()

    async def _open_session(self, url: str) -> Session:
        assert self._http is not None
        wire = HTTPWire(
            self._http,
            url,
            headers=self._headers,
            auth=self._auth,
            max_message_bytes=self._max_event_bytes,
        )
        era = HandshakeEra(
            protocol_version=self._offered_version,
            client_info=self._client_info,
            capabilities=self._handlers.capabilities(),
        )
        session = Session(wire, era, self._handlers, self._task_group, self._events)
        session.on_list_changed.append(self._list_changed)
        self._init = await era.open(session, timeout=None)
        return session

    async def _carry_state(self, session: Session, old_session_id: str | None) -> None:
        """Call the resume tool on the new session so the old session's state moves over."""
        name = self.resume_tool
        if name is None or old_session_id is None or old_session_id == session.session_id:
            return
        try:
            tools = await self._list_tools_on(session)
            if name not in tools:
                logger.info(
                    "server at %s lists no %r tool: state of session %s is not carried over",
                    session.endpoint,
                    name,
                    old_session_id,
                )
                return
            raw = await session.request(
                "tools/call",
                {"name": name, "arguments": {"old_session_id": old_session_id}},
                timeout=None,
            )
            result = mcp_types.CallToolResult.model_validate(raw)
            if result.is_error:
                text = " ".join(getattr(block, "text", "") for block in result.content)
                raise ProtocolError(f"{name} answered with an error: {text or 'no detail'}")
        except (MCPError, ValidationError) as exc:
            self.stats.resume_failures += 1
            await self._events.emit(
                "resume_failed",
                endpoint=session.endpoint,
                session_id=session.session_id,
                old_session_id=old_session_id,
                error=str(exc),
            )
            if self.on_resume_failure == "raise":
                self._resume_error = ResumeFailedError(
                    f"session {old_session_id} was replaced by {session.session_id}, but"
                    f" {name} failed, so its state may be missing: {exc}",
                    old_session_id=old_session_id,
                    endpoint=session.endpoint,
                    session_id=session.session_id,
                )
            return
        self.stats.resumes += 1
        await self._events.emit(
            "session_resumed",
            endpoint=session.endpoint,
            session_id=session.session_id,
            old_session_id=old_session_id,
        )

    async def _list_tools_on(self, session: Session) -> dict[str, mcp_types.Tool]:
        """tools/list straight on one session (no retry loop: used while recovering)."""
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            raw = await session.request(
                "tools/list", {"cursor": cursor} if cursor else None, timeout=None
            )
            page = mcp_types.ListToolsResult.model_validate(raw)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._tools = {tool.name: tool for tool in tools}
        return self._tools

    # -- failure handling ----------------------------------------------------------

    async def _endpoint_failed(self, endpoint: Endpoint) -> None:
        self._bucket.on_failure()
        if self._pool.record_failure(endpoint):
            await self._events.emit(
                "endpoint_down", endpoint=endpoint.url, down_for=round(endpoint.down_interval, 3)
            )
            if not endpoint.probing and self._stack is not None:
                endpoint.probing = True
                self._task_group.start_soon(self._probe, endpoint)

    async def _probe(self, endpoint: Endpoint) -> None:
        """Bring a down endpoint back as soon as it answers HTTP again."""
        assert self._http is not None
        try:
            while self._stack is not None and endpoint.down_until > 0:
                await anyio.sleep(max(0.0, endpoint.down_until - time.monotonic()))
                if endpoint.down_until == 0:
                    return  # a real call succeeded there meanwhile
                alive = False
                with anyio.move_on_after(2):
                    try:
                        request = self._http.build_request(
                            "GET", endpoint.url, headers={**self._headers, "Accept": SSE_ACCEPT}
                        )
                        response = await self._http.send(request, stream=True)
                        await response.aclose()
                        alive = True
                    except httpx.HTTPError:
                        alive = False
                if alive:
                    self._pool.record_success(endpoint)
                    await self._events.emit("endpoint_up", endpoint=endpoint.url, probe=True)
                    return
                self._pool.mark_down(endpoint)
        finally:
            endpoint.probing = False

    async def _drop_session(self, session: Session, failure: Failure, exc: MCPError) -> None:
        """Forget a failed session (only if it is still the current one: generation guard)."""
        if self._session is not session:
            return
        self._session = None
        self._lost = _Lost(session.session_id, session.endpoint)
        self.stats.sessions_lost += 1
        session.stop()
        await self._events.emit(
            "session_lost",
            endpoint=session.endpoint,
            session_id=session.session_id,
            reason=failure.value,
            error=exc.message,
        )

    async def _backoff(
        self,
        attempt: int,
        exc: MCPError,
        deadline: float,
        method: str,
        endpoint: str | None,
        session_id: str | None,
    ) -> None:
        policy = self.retry_policy
        delay = policy.backoff(attempt)
        if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        if self._bucket.throttled:
            delay = max(delay, policy.max_backoff)
        if anyio.current_time() + delay >= deadline:
            what = "could not open a session" if method == "initialize" else method
            raise RequestTimeoutError(
                f"{what}: gave up before the deadline, which comes before the next retry"
                f" (in {delay:.2f} s) could be made; last error: {exc.message}",
                endpoint=endpoint,
                session_id=session_id,
                hint="Pass a larger timeout= to ride out longer outages",
            ) from exc
        self.stats.retries += 1
        await self._events.emit(
            "retry",
            endpoint=endpoint,
            session_id=session_id,
            method=method,
            attempt=attempt,
            delay=round(delay, 3),
            error=exc.message,
        )
        await anyio.sleep(delay)

    def _list_changed(self, kind: str) -> None:
        if kind == "tools":
            self._tools.clear()

    def _require_session(self) -> Session:
        if self._session is None:
            raise ClientClosedError(
                "the client is not open", hint="Use it inside 'async with ResilientClient(...)'"
            )
        return self._session

    # -- facts about the connection ------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The current ``Mcp-Session-Id`` (``None`` if the server does not use sessions)."""
        return self._session.session_id if self._session else None

    @property
    def endpoint(self) -> str | None:
        """The endpoint URL the current session lives on."""
        return self._session.endpoint if self._session else None

    @property
    def protocol_version(self) -> str | None:
        """The negotiated protocol version."""
        return self._session.era.protocol_version if self._session else None

    @property
    def server_info(self) -> mcp_types.Implementation | None:
        """The server's name and version from ``initialize``."""
        return self._init.server_info if self._init else None

    @property
    def server_capabilities(self) -> mcp_types.ServerCapabilities | None:
        """What the server said it can do."""
        return self._init.capabilities if self._init else None

    @property
    def instructions(self) -> str | None:
        """The server's usage instructions, if it sent any."""
        return self._init.instructions if self._init else None

    # -- requests ------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        params: dict[str, Any] | None,
        model: type[ModelT],
        *,
        timeout: float | Literal["default"] | None = "default",
        progress_handler: ProgressHandler | None = None,
        idempotent: bool | None = None,
    ) -> ModelT:
        if self._stack is None:
            self._require_session()
        limit = self.timeout if timeout == "default" else timeout
        deadline = _deadline(limit)
        # A bare cancel scope: the deadline of the whole call, retries and waits included.
        with anyio.CancelScope(deadline=deadline) as scope:
            raw, session = await self._call(method, params, deadline, progress_handler, idempotent)
        if scope.cancelled_caught:
            raise RequestTimeoutError(
                f"{method} did not complete within {limit:g} s",
                endpoint=self.endpoint,
                session_id=self.session_id,
                hint="Pass a larger timeout= if the server is just slow",
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

    async def _call(
        self,
        method: str,
        params: dict[str, Any] | None,
        deadline: float,
        progress_handler: ProgressHandler | None,
        idempotent: bool | None,
    ) -> tuple[dict[str, Any], Session]:
        """One call with retries: classify each failure, re-send only what is safe."""
        policy = self.retry_policy
        attempt = 0
        while True:
            attempt += 1
            self.stats.attempts += 1
            session = await self._ensure_session(deadline)
            if self._resume_error is not None:
                # The state did not move to this session: say so before running anything.
                error, self._resume_error = self._resume_error, None
                raise error
            endpoint = self._pool.get(session.endpoint)
            endpoint.in_flight += 1
            try:
                raw = await session.request(
                    method, params, timeout=None, progress_handler=progress_handler
                )
            except RequestTimeoutError:
                raise
            except MCPError as exc:
                failure = classify(exc)
                if failure is Failure.ANSWERED:
                    raise
                if failure is not Failure.SESSION_LOST:
                    await self._endpoint_failed(endpoint)
                if self._session_is_lost(failure, exc, endpoint):
                    await self._drop_session(session, failure, exc)
                if failure is Failure.IN_DOUBT and not await self._safe(
                    method, params, idempotent, deadline
                ):
                    raise await self._outcome_unknown(method, params, session, exc) from exc
                if policy.max_attempts is not None and attempt >= policy.max_attempts:
                    raise
                await self._backoff(
                    attempt, exc, deadline, method, session.endpoint, session.session_id
                )
                continue
            finally:
                endpoint.in_flight -= 1
            self._bucket.on_success()
            if self._pool.record_success(endpoint):
                await self._events.emit("endpoint_up", endpoint=endpoint.url)
            return raw, session

    def _session_is_lost(self, failure: Failure, exc: MCPError, endpoint: Endpoint) -> bool:
        """Does this failure end the session (so the next attempt starts a new one)?"""
        if failure is Failure.SESSION_LOST:
            return True
        if isinstance(exc, HTTPStatusError):
            # A 5xx says nothing about the session itself (a 404 on the retry would), but
            # once the endpoint is marked down the session should move if it can.
            return endpoint.down_until > time.monotonic() and len(self.endpoints) > 1
        if failure is Failure.IN_DOUBT or endpoint.down_until > 0:
            return True
        # Connection refused: move now if there is somewhere else to go.
        return len(self.endpoints) > 1

    async def _safe(
        self,
        method: str,
        params: dict[str, Any] | None,
        idempotent: bool | None,
        deadline: float,
    ) -> bool:
        """May this request be re-sent after an ambiguous failure?"""
        if idempotent is False:
            return False
        if method in SAFE_METHODS:
            return True
        if method != "tools/call" or params is None:
            return bool(idempotent)
        name = str(params.get("name"))
        if idempotent is None and self.trust_annotations and name not in self._tools:
            # The annotations decide, and we have not seen them: look them up (read-only).
            try:
                await self.list_tools(timeout=max(0.0, deadline - anyio.current_time()))
            except MCPError as exc:
                logger.info("could not list tools to check %r's annotations: %s", name, exc)
                return False
        return tool_is_safe(
            name, idempotent=idempotent, trust_annotations=self.trust_annotations, tools=self._tools
        )

    async def _outcome_unknown(
        self, method: str, params: dict[str, Any] | None, session: Session, exc: MCPError
    ) -> OutcomeUnknownError:
        self.stats.outcome_unknown += 1
        tool = str(params.get("name")) if method == "tools/call" and params else None
        what = f"{method} of tool {tool!r}" if tool else method
        await self._events.emit(
            "outcome_unknown",
            endpoint=session.endpoint,
            session_id=session.session_id,
            method=method,
            tool=tool,
            request_id=exc.request_id,
            error=exc.message,
        )
        return OutcomeUnknownError(
            f"{what} (request id {exc.request_id}) was sent but its answer was lost"
            f" ({exc.message}); it is not known to be safe to send again",
            method=method,
            tool=tool,
            request_id=exc.request_id,
            stage="sent; connection lost before the answer",
            endpoint=session.endpoint,
            session_id=session.session_id,
        )

    async def _paginate(
        self,
        method: str,
        model: type[ModelT],
        field: str,
        timeout: float | Literal["default"] | None,
    ) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        deadline = self.timeout if timeout == "default" else timeout
        with anyio.fail_after(deadline if deadline is not None else math.inf):
            for _ in range(_MAX_PAGES):
                params = {"cursor": cursor} if cursor is not None else None
                page = await self._request(method, params, model, timeout=None)
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
        raise ProtocolError(
            f"{method} returned more than {_MAX_PAGES} pages", endpoint=self.endpoint
        )

    async def list_tools(
        self, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[mcp_types.Tool]:
        """All the server's tools (every page). Also caches their annotations."""
        tools: list[mcp_types.Tool] = await self._paginate(
            "tools/list", mcp_types.ListToolsResult, "tools", timeout
        )
        self._tools = {tool.name: tool for tool in tools}
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
    ) -> mcp_types.CallToolResult:
        """Call a tool. A tool-level failure comes back with ``is_error=True``, not raised.

        After an ambiguous failure (sent, answer lost) the call is re-sent only if it is
        safe: ``idempotent=True``, or (when ``None``) the tool's annotations from the last
        ``list_tools`` say read-only or idempotent. Otherwise ``OutcomeUnknownError``.
        ``idempotent=False`` forbids re-sending after the request went out.
        """
        params: dict[str, Any] = {"name": name, "arguments": dict(arguments or {})}
        if meta:
            params["_meta"] = dict(meta)
        return await self._request(
            "tools/call",
            params,
            mcp_types.CallToolResult,
            timeout=timeout,
            progress_handler=progress_handler,
            idempotent=idempotent,
        )

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
        """Check that the server answers."""
        await self._request("ping", None, mcp_types.EmptyResult, timeout=timeout)

    async def set_logging_level(
        self,
        level: mcp_types.LoggingLevel,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> None:
        """Ask the server to send log messages at ``level`` and above."""
        await self._request(
            "logging/setLevel", {"level": level}, mcp_types.EmptyResult, timeout=timeout
        )

    async def send_roots_list_changed(self) -> None:
        """Tell the server the client's roots changed (it will ask again with roots/list)."""
        session = self._require_session()
        await session.notify("notifications/roots/list_changed")

    def cached_tool(self, name: str) -> mcp_types.Tool | None:
        """The tool as last listed by ``list_tools`` (``None`` if not listed yet)."""
        return self._tools.get(name)
