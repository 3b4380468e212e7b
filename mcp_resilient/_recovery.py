"""The recovery layer: every decision about keeping a call going, in one place.

Layers, bottom up: the wire (``_transports``), the exchange of one request
(``_exchange``), the protocol eras (``_eras``), this layer, the public client
(``_client``). Here: getting a usable connection (endpoint choice, negotiation, session
establishment and replacement, carrying the old session's state over with the resume
tool), new-era per-request routing (``_routing``), backoff and the retry budget, endpoint
failure accrual and probing, and the one "may this be re-sent, or is its outcome unknown?"
decision (with ``_classify``). The client above only states what to call and by when.
Nothing here imports the client: what it needs from above (listing tools to read their
annotations) is handed in as a callable.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio
import httpx
import mcp_types
from pydantic import ValidationError

from ._background import Background
from ._classify import (
    IDEMPOTENCY_META_KEY,
    LEDGER_STARTED_NOT_FINISHED,
    SAFE_METHODS,
    Failure,
    classify,
    honours_idempotency_keys,
    tool_is_safe,
)
from ._eras import Era, Negotiator, StatelessEra, StatelessSession
from ._events import EventSink
from ._exchange import CURRENT_CALL, InFlight, Session
from ._handlers import Handlers, ProgressHandler
from ._policy import RetryPolicy, TokenBucket
from ._pool import Endpoint, EndpointPool
from ._routing import StatelessRoutes
from ._transports import (
    SSE_ACCEPT,
    CoreTransport,
    EndpointSlots,
    HTTPWire,
    HttpxTransport,
    Transport,
    lean_path_possible,
)
from .errors import (
    ClientClosedError,
    ConnectError,
    HTTPStatusError,
    MCPError,
    OutcomeUnknownError,
    OutcomeUnknownTimeoutError,
    ProtocolError,
    RequestTimeoutError,
    ResumeFailedError,
    ServerError,
)

__all__ = ["ClientStats", "ListedBytes", "Recovery", "end_session", "new_key"]


UnknownT = TypeVar("UnknownT", bound=OutcomeUnknownError)

logger = logging.getLogger("mcp_resilient")

MAX_PAGES = 10_000
MAX_LISTED_BYTES = 32 * 1024 * 1024
"""Cap on the JSON of all pages of one list call: endless cursors must not fill memory."""
_LISTEN_READY_SECONDS = 2.0
_LISTEN_READY_SHARE = 0.2
"""The wait for the listen stream takes at most this share of what is left of the deadline
(and at most ``_LISTEN_READY_SECONDS``): a GET that withholds its headers must not fail
the open."""
CLOSE_SECONDS = 5.0
"""Bound on each step of closing (the DELETE, stopping background tasks)."""


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


def new_key() -> str:
    """A fresh idempotency key."""
    # 128 random bits: unguessable, so the key is also the secret that guards its result.
    return secrets.token_hex(16)


class ListedBytes:
    """Counts what one list call has taken in, and stops it at ``MAX_LISTED_BYTES``."""

    __slots__ = ("method", "pages", "total")

    def __init__(self, method: str) -> None:
        self.method = method
        self.pages = 0
        self.total = 0

    def add(self, size: int, endpoint: str | None, session_id: str | None) -> None:
        self.pages += 1
        self.total += size
        if self.total > MAX_LISTED_BYTES:
            raise ProtocolError(
                f"{self.method} sent more than {MAX_LISTED_BYTES} bytes over {self.pages}"
                " pages and still has a next cursor; stopped listing",
                endpoint=endpoint,
                session_id=session_id,
                hint="The server's list never ends or is far larger than any real one",
            )


async def end_session(session: Session) -> None:
    """Stop a session's background work and DELETE it (bounded; never raises)."""
    session.stop()
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SECONDS):
        try:
            await session.era.close(session)
        except MCPError as exc:
            logger.debug("DELETE of session %s failed: %s", session.session_id, exc)


HTTP_PATH_VARIABLE = "MCP_RESILIENT_HTTP_PATH"
"""``httpx`` sends everything through httpx even when the lean path could carry it (to
compare the two paths, or to rule the lean one out); unset or ``lean``: the default."""


def queue_note(flight: InFlight) -> str:
    """`` for 2.1 s for a connection to URL (limit 100 per endpoint)``: where the time went."""
    waited = flight.queued_for
    if flight.queued_since is not None:
        waited += time.monotonic() - flight.queued_since
    return (
        f" for {waited:.1f} s for a connection to {flight.queue_endpoint}"
        f" (max_connections={flight.queue_limit} per endpoint)"
    )


def use_lean_path(endpoints: Sequence[str]) -> bool:
    """Whether a client owning its HTTP stack sends on the lean path (httpcore directly)."""
    if os.environ.get(HTTP_PATH_VARIABLE, "lean").strip().lower() == "httpx":
        return False
    return lean_path_possible(endpoints)


class Recovery:
    """The connection a client calls through, and every decision that keeps it usable.

    One per client. ``attach`` hands it the HTTP pool and the background task group when
    the client opens; ``detach`` when it closes (probes then stop).
    """

    def __init__(
        self,
        endpoints: tuple[str, ...],
        *,
        policy: RetryPolicy,
        headers: Mapping[str, str],
        auth: httpx.Auth | None,
        max_event_bytes: int,
        handlers: Handlers,
        events: EventSink,
        negotiator: Negotiator,
        listen: bool,
        resume_tool: str | None,
        trust_annotations: bool,
        on_resume_failure: Literal["raise", "ignore"],
        stats: ClientStats,
        list_tools: Callable[[float], Awaitable[object]],
    ) -> None:
        self.endpoints = endpoints
        self.policy = policy
        self.headers = headers
        self.auth = auth
        self.max_event_bytes = max_event_bytes
        self.handlers = handlers
        self.events = events
        self.listen = listen
        self.resume_tool = resume_tool
        self.trust_annotations = trust_annotations
        self.on_resume_failure = on_resume_failure
        self.stats = stats
        self._list_tools = list_tools
        self.open = False
        self.http: httpx.AsyncClient | None = None
        self.transport: Transport | None = None
        self.background: Background | None = None
        self.lock: anyio.Lock | None = None
        self.session: Session | None = None
        self.init: mcp_types.InitializeResult | None = None
        self.discover_error: MCPError | None = None  # why the last capability check failed
        self.lost: _Lost | None = None
        self.resume_error: ResumeFailedError | None = None
        self.last_endpoint: str | None = None
        """The endpoint that answered the last request (2026-07-28: requests move freely)."""
        self.tools: dict[str, mcp_types.Tool] = {}
        self.tools_fresh_until = float("inf")  # from the list results' ttlMs (2026-07-28)
        self.pool = EndpointPool(endpoints, policy)
        self.bucket = TokenBucket(policy.budget)
        self.negotiator = negotiator
        self.routes = StatelessRoutes(
            self.pool,
            self.route_session,
            lambda url: self.negotiator.known.get(url) != "handshake",
        )

    def attach(
        self,
        http: httpx.AsyncClient,
        background: Background,
        *,
        own_http: bool = False,
        max_connections: int | None = None,
    ) -> None:
        """The client opened: these are the pool and task group to work with.

        A client that owns its HTTP stack and has no ``httpx.Auth`` sends on the lean path
        (httpcore directly); otherwise everything goes through ``http``. Either way, our own
        pool is bounded per endpoint by ``max_connections``, a caller's pool by its limits.
        """
        self.http = http
        slots = EndpointSlots(max_connections if own_http else None)
        if own_http and self.auth is None and use_lean_path(self.endpoints):
            self.transport = CoreTransport(self.endpoints, slots)
        else:
            self.transport = HttpxTransport(http, auth=self.auth, slots=slots)
        self.background = background
        self.lock = anyio.Lock()
        self.open = True

    async def close_transport(self) -> None:
        """Close the lean path's connections (the httpx path's client is closed by its owner)."""
        transport, self.transport = self.transport, None
        if transport is not None:
            await transport.aclose()

    def detach(self) -> None:
        """The client is closing (or failed to open): start nothing new."""
        self.open = False

    # -- facts about the connection ------------------------------------------------

    @property
    def endpoint(self) -> str | None:
        """Where calls go now: the session's endpoint (handshake era), or the endpoint
        that served the last request (2026-07-28: each request picks its endpoint)."""
        session = self.session
        if session is None:
            return None
        if self.last_endpoint is not None and isinstance(session.era, StatelessEra):
            return self.last_endpoint
        return session.endpoint

    @property
    def session_id(self) -> str | None:
        return self.session.session_id if self.session else None

    def stateless(self) -> bool:
        """Is the current connection in the 2026-07-28 era?"""
        return self.session is not None and isinstance(self.session.era, StatelessEra)

    def list_changed(self, kind: str) -> None:
        if kind == "tools":
            self.tools.clear()
            self.tools_fresh_until = float("inf")

    # -- a usable connection -------------------------------------------------------

    async def ensure_session(self, deadline: float) -> Session:
        """The current session, or a new one (shared by every caller waiting on it)."""
        session = self.session
        if session is not None:
            return session
        assert self.lock is not None, "ensure_session before attach"
        async with self.lock:
            if self.session is None:
                await self.establish(deadline)
            assert self.session is not None
            return self.session

    async def establish(self, deadline: float) -> None:
        """Open a session on the best endpoint, retrying with backoff within the deadline."""
        lost = self.lost
        policy = self.policy
        attempt = 0
        first_failed: str | None = None
        retried: dict[str, Any] | None = None  # the failure a retry follows, not yet reported
        while True:
            attempt += 1
            endpoint = self.pool.pick(avoid=lost.endpoint if lost else None)
            if retried is not None:
                await self.events.emit("retry", endpoint=endpoint.url, **retried)
                retried = None
            try:
                session = await self.open_session(endpoint.url)
                break
            except RequestTimeoutError:
                raise
            except MCPError as exc:
                if classify(exc) is Failure.ANSWERED:
                    raise
                first_failed = first_failed or endpoint.url
                await self.endpoint_failed(endpoint)
                if policy.max_attempts is not None and attempt >= policy.max_attempts:
                    raise ConnectError(
                        f"could not open a session after {attempt} attempts over"
                        f" {len(self.endpoints)} endpoint(s); last error at {endpoint.url}:"
                        f" {exc.message}",
                        endpoint=", ".join(self.endpoints),
                        hint="Check that at least one server is running",
                    ) from exc
                delay = await self.backoff(
                    attempt, exc, deadline, "initialize", endpoint.url, None, announce=False
                )
                retried = {
                    "method": "initialize",
                    "attempt": attempt,
                    "delay": round(delay, 3),
                    "error": exc.message,
                    "from_endpoint": endpoint.url,
                }
        try:
            if self.pool.record_success(endpoint):
                await self.events.emit("endpoint_up", endpoint=endpoint.url)
            self.stats.sessions += 1
            await self.events.emit(
                "session_started",
                endpoint=session.endpoint,
                session_id=session.session_id,
                protocol_version=session.era.protocol_version,
            )
            if lost is not None:
                if lost.endpoint != session.endpoint:
                    self.stats.failovers += 1
                    await self.events.emit(
                        "failover",
                        endpoint=session.endpoint,
                        session_id=session.session_id,
                        from_endpoint=lost.endpoint,
                    )
                # The session becomes current only once the old state is in it: calls waiting
                # on the recovery lock must not run on a half-made session. If this caller's
                # deadline cuts the resume short, `lost` stays set and the next caller
                # starts over (a new session, and the resume from the original old id).
                await self.carry_state(session, lost.session_id)
                self.lost = None
            elif first_failed is not None and first_failed != session.endpoint:
                # Opening moved on from an endpoint that failed: that is a failover too.
                self.stats.failovers += 1
                await self.events.emit(
                    "failover",
                    endpoint=session.endpoint,
                    session_id=session.session_id,
                    from_endpoint=first_failed,
                )
            # A new handshake session knows none of the caller's resource subscriptions.
            await self.resubscribe(session)
        except BaseException:
            # Not handed out (cancelled, or the deadline passed mid-resume): end it on the
            # server rather than leave it to expire.
            await end_session(session)
            raise
        self.session = session
        self.last_endpoint = session.endpoint
        if self.listen:
            ready = session.start_listening()
            # Wait (briefly) for the listen stream, so a server that sends requests outside
            # any call (e.g. elicitation on the GET stream) finds it open from the first call.
            # Only a small share of the deadline: a GET that withholds its headers must not
            # use it up (the open, or the call that reopened, still has work to do).
            remaining = max(0.0, deadline - anyio.current_time())
            with anyio.move_on_after(min(_LISTEN_READY_SECONDS, _LISTEN_READY_SHARE * remaining)):
                await ready.wait()

    async def open_session(self, url: str) -> Session:
        made: list[Session] = []

        def new_session(kind: type[Session], era: Era) -> Session:
            made.append(self.new_session(url, kind, era))
            return made[-1]

        try:
            session, self.init = await self.negotiator.open(url, new_session)
            # What this endpoint said of itself: a keyed re-send trusts only that.
            self.pool.get(url).honours_keys = honours_idempotency_keys(
                self.init.capabilities if self.init else None
            )
        except BaseException as exc:
            # Cut short (the deadline, a cancel, a bug) after initialize was answered: end
            # that session on the server rather than leave it behind. A typed failure is
            # the era's to clean up (it ends a session it gives up on itself).
            if not isinstance(exc, MCPError):
                for orphan in made:
                    if orphan.session_id is not None:
                        await end_session(orphan)
            raise
        return session

    def new_session(self, url: str, kind: type[Session], era: Era) -> Session:
        assert self.transport is not None
        assert self.background is not None
        wire = HTTPWire(
            self.transport, url, headers=self.headers, max_message_bytes=self.max_event_bytes
        )
        session = kind(wire, era, self.handlers, self.background, self.events)
        session.on_list_changed.append(self.list_changed)
        return session

    def route_session(self, url: str) -> Session:
        """A stateless session to another endpoint, for per-request routing."""
        return self.new_session(url, StatelessSession, self.negotiator.route_era())

    async def carry_state(self, session: Session, old_session_id: str | None) -> None:
        """Call the resume tool on the new session so the old session's state moves over."""
        name = self.resume_tool
        if name is None or old_session_id is None or old_session_id == session.session_id:
            return
        if isinstance(session.era, StatelessEra):
            return  # no session to carry state into: the new era passes state explicitly
        try:
            tools = await self.list_tools_on(session)
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
            await self.events.emit(
                "resume_failed",
                endpoint=session.endpoint,
                session_id=session.session_id,
                old_session_id=old_session_id,
                error=str(exc),
            )
            if self.on_resume_failure == "raise":
                self.resume_error = ResumeFailedError(
                    f"session {old_session_id} was replaced by {session.session_id}, but"
                    f" {name} failed, so its state may be missing: {exc}",
                    old_session_id=old_session_id,
                    endpoint=session.endpoint,
                    session_id=session.session_id,
                )
            return
        self.stats.resumes += 1
        await self.events.emit(
            "session_resumed",
            endpoint=session.endpoint,
            session_id=session.session_id,
            old_session_id=old_session_id,
        )

    @property
    def resource_subscriptions(self) -> list[str]:
        """The resource URIs the caller subscribed to (shared with the stateless era)."""
        return self.negotiator.settings.resource_subscriptions

    def relisten(self) -> anyio.Event | None:
        """Stateless: reopen the listen stream with the current filter; the ack's event."""
        session = self.session
        return session.relisten() if isinstance(session, StatelessSession) else None

    async def resubscribe(self, session: Session) -> None:
        """Handshake era: subscribe a new session to the resources the caller subscribed to.

        A refusal is logged, not raised: the call that opened the session is not about it.
        """
        if isinstance(session.era, StatelessEra):
            return  # the listen stream carries the subscriptions (``listen_filter``)
        for uri in list(self.resource_subscriptions):
            try:
                await session.request("resources/subscribe", {"uri": uri}, timeout=None)
            except MCPError as exc:
                logger.warning("could not re-subscribe to %s on %s: %s", uri, session.endpoint, exc)

    async def list_tools_on(self, session: Session) -> dict[str, mcp_types.Tool]:
        """tools/list straight on one session (no retry loop: used while recovering)."""
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        listed = ListedBytes("tools/list")
        for _ in range(MAX_PAGES):
            raw = await session.request(
                "tools/list", {"cursor": cursor} if cursor else None, timeout=None
            )
            listed.add(len(json.dumps(raw, separators=(",", ":"))), self.endpoint, self.session_id)
            page = mcp_types.ListToolsResult.model_validate(raw)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = {tool.name: tool for tool in tools}
        return self.tools

    # -- endpoints, sessions, backoff ----------------------------------------------

    async def endpoint_failed(self, endpoint: Endpoint) -> None:
        self.bucket.on_failure()
        if self.pool.record_failure(endpoint):
            await self.events.emit(
                "endpoint_down", endpoint=endpoint.url, down_for=round(endpoint.down_interval, 3)
            )
            if not endpoint.probing and self.open and self.background is not None:
                endpoint.probing = True
                self.background.start_soon(self.probe, endpoint)

    async def probe(self, endpoint: Endpoint) -> None:
        """Bring a down endpoint back as soon as it answers HTTP again."""
        assert self.http is not None
        try:
            while self.open and endpoint.down_until > 0:
                await anyio.sleep(max(0.0, endpoint.down_until - time.monotonic()))
                if endpoint.down_until == 0:
                    return  # a real call succeeded there meanwhile
                alive = False
                with anyio.move_on_after(2):
                    try:
                        request = self.http.build_request(
                            "GET", endpoint.url, headers={**self.headers, "Accept": SSE_ACCEPT}
                        )
                        response = await self.http.send(request, stream=True)
                        await response.aclose()
                        alive = True
                    except httpx.HTTPError:
                        alive = False
                if alive:
                    self.pool.record_success(endpoint)
                    await self.events.emit("endpoint_up", endpoint=endpoint.url, probe=True)
                    return
                self.pool.mark_down(endpoint)
        finally:
            endpoint.probing = False

    async def drop_session(self, session: Session, failure: Failure, exc: MCPError) -> None:
        """Forget a failed session (only if it is still the current one: generation guard)."""
        session = self.routes.owner(session)
        if self.session is not session:
            return
        self.session = None
        self.lost = _Lost(session.session_id, session.endpoint)
        self.stats.sessions_lost += 1
        session.stop()
        await self.events.emit(
            "session_lost",
            endpoint=session.endpoint,
            session_id=session.session_id,
            reason=failure.value,
            error=exc.message,
        )

    async def backoff(
        self,
        attempt: int,
        exc: MCPError,
        deadline: float,
        method: str,
        endpoint: str | None,
        session_id: str | None,
        *,
        announce: bool = True,
        policy: RetryPolicy | None = None,
    ) -> float:
        """Wait before the next attempt; ``announce=False`` leaves the ``retry`` event to
        the caller, which emits it once it knows where the retry goes."""
        policy = policy or self.policy
        delay = policy.backoff(attempt)
        if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        if self.bucket.throttled:
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
        if announce:
            await self.events.emit(
                "retry",
                endpoint=endpoint,
                session_id=session_id,
                method=method,
                attempt=attempt,
                delay=round(delay, 3),
                error=exc.message,
            )
        await anyio.sleep(delay)
        return delay

    # -- one call, kept going ------------------------------------------------------

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        deadline: float,
        progress_handler: ProgressHandler | None,
        idempotent: bool | None,
        policy: RetryPolicy | None = None,
    ) -> tuple[dict[str, Any], Session]:
        """One call with retries: classify each failure, re-send only what is safe.

        ``policy``: this call's own attempts and backoff (default: the client's); the
        retry budget and endpoint health stay the client's.

        Once an attempt has left the call in doubt, giving up for any later reason (the
        re-sends refused, attempts or deadline used up) still says "outcome unknown",
        unless a second run is known to be harmless.
        """
        doubts: list[tuple[Session, MCPError]] = []
        try:
            return await self._attempts(
                method, params, deadline, progress_handler, idempotent, doubts, policy
            )
        except OutcomeUnknownError:
            raise
        except MCPError as exc:
            if not doubts or self.known_safe(method, params, idempotent):
                raise
            raise await self.gave_up_in_doubt(method, params, doubts[0], exc) from exc

    async def _attempts(
        self,
        method: str,
        params: dict[str, Any] | None,
        deadline: float,
        progress_handler: ProgressHandler | None,
        idempotent: bool | None,
        doubts: list[tuple[Session, MCPError]],
        call_policy: RetryPolicy | None = None,
    ) -> tuple[dict[str, Any], Session]:
        policy = call_policy or self.policy
        attempt = 0
        doubt: tuple[Session, MCPError] | None = None  # the first failure that left it in doubt
        unrecorded = False  # an attempt in doubt went where no ledger would record its run
        retried: dict[str, Any] | None = None  # the failure a retry follows, not yet reported
        flight = CURRENT_CALL.get()
        while True:
            attempt += 1
            self.stats.attempts += 1
            failovers = self.stats.failovers
            session = self.routes.route(await self.ensure_session(deadline))
            if retried is not None:
                # Reported once it has somewhere to go: the endpoint and session it runs on.
                await self.events.emit(
                    "retry", endpoint=session.endpoint, session_id=session.session_id, **retried
                )
                if (
                    retried["from_endpoint"] != session.endpoint
                    and self.stats.failovers == failovers  # not already told by a new session
                    and isinstance(session.era, StatelessEra)
                ):
                    # 2026-07-28: no session moves, but the call did: that is a failover.
                    self.stats.failovers += 1
                    await self.events.emit(
                        "failover",
                        endpoint=session.endpoint,
                        session_id=session.session_id,
                        from_endpoint=retried["from_endpoint"],
                        method=method,
                    )
                retried = None
            if self.resume_error is not None:
                # The state did not move to this session: say so before running anything.
                error, self.resume_error = self.resume_error, None
                raise error
            if self.only_the_key_makes_it_safe(method, params, idempotent):
                # A re-send that only the key makes safe must reach an endpoint that honours
                # keys by its own word, after sends that all did: else it could run twice.
                routed = await self.keyed_target(
                    session, deadline, method, params, doubt, unrecorded
                )
                if routed is None:  # none could be asked now: wait, then ask again
                    last = doubt[1] if doubt is not None else self.discover_error
                    assert last is not None
                    if policy.max_attempts is not None and attempt >= policy.max_attempts:
                        if doubt is None:
                            raise last  # never sent: a plain failure
                        raise await self.outcome_unknown(method, params, *doubt)
                    await self.backoff(
                        attempt,
                        last,
                        deadline,
                        method,
                        session.endpoint,
                        session.session_id,
                        announce=False,
                    )
                    continue
                session = routed
            endpoint = self.pool.get(session.endpoint)
            recorded = endpoint.honours_keys is True  # a run here would be in the ledger
            endpoint.in_flight += 1
            if flight is not None:
                flight.sent = True  # from here on, a deadline leaves it in doubt
            try:
                raw = await session.request(
                    method, params, timeout=None, progress_handler=progress_handler
                )
            except RequestTimeoutError:
                raise
            except MCPError as exc:
                failure = classify(exc)
                if flight is not None and failure is not Failure.IN_DOUBT and doubt is None:
                    flight.sent = False  # refused or answered: it did not run (or we know)
                if failure is Failure.ANSWERED:
                    if await self.ledger_lost_run(
                        method, params, idempotent, deadline, exc, doubt or (session, exc)
                    ):
                        continue  # safe without the ledger: re-run under a fresh key
                    raise
                if failure is Failure.IN_DOUBT and doubt is None:
                    doubt = (session, exc)
                    doubts.append(doubt)
                    if flight is not None:
                        flight.in_doubt = True
                if failure is Failure.IN_DOUBT:
                    unrecorded = unrecorded or not recorded
                if failure is not Failure.SESSION_LOST:
                    await self.endpoint_failed(endpoint)
                if self.session_is_lost(failure, exc, endpoint):
                    await self.drop_session(session, failure, exc)
                if failure is Failure.IN_DOUBT and not await self.safe(
                    method, params, idempotent, deadline
                ):
                    raise await self.outcome_unknown(method, params, session, exc) from exc
                if failure is Failure.IN_DOUBT and isinstance(session, StatelessSession):
                    # It may come back as another build: ask it again before a keyed re-send.
                    self.pool.get(session.endpoint).honours_keys = None
                if policy.max_attempts is not None and attempt >= policy.max_attempts:
                    raise
                delay = await self.backoff(
                    attempt,
                    exc,
                    deadline,
                    method,
                    session.endpoint,
                    session.session_id,
                    announce=False,
                    policy=policy,
                )
                retried = {
                    "method": method,
                    "attempt": attempt,
                    "delay": round(delay, 3),
                    "error": exc.message,
                    "from_endpoint": session.endpoint,
                    "from_session_id": session.session_id,
                }
                continue
            finally:
                endpoint.in_flight -= 1
            self.bucket.on_success()
            self.last_endpoint = session.endpoint
            if self.pool.record_success(endpoint):
                await self.events.emit("endpoint_up", endpoint=endpoint.url)
            return raw, session

    def session_is_lost(self, failure: Failure, exc: MCPError, endpoint: Endpoint) -> bool:
        """Does this failure end the session (so the next attempt starts a new one)?"""
        if failure is Failure.SESSION_LOST:
            return True
        if self.stateless():
            return False  # no session to lose: each request picks its endpoint anyway
        if isinstance(exc, HTTPStatusError):
            # A 5xx says nothing about the session itself (a 404 on the retry would), but
            # once the endpoint is marked down the session should move if it can.
            return endpoint.down_until > time.monotonic() and len(self.endpoints) > 1
        if failure is Failure.IN_DOUBT or endpoint.down_until > 0:
            return True
        # Connection refused: move now if there is somewhere else to go.
        return len(self.endpoints) > 1

    # -- "re-send" or "outcome unknown" --------------------------------------------

    async def safe(
        self,
        method: str,
        params: dict[str, Any] | None,
        idempotent: bool | None,
        deadline: float,
        *,
        use_key: bool = True,
    ) -> bool:
        """May this request be re-sent after an ambiguous failure?

        ``use_key``: count the call's idempotency key (a server that honours keys answers
        a re-send with the first run's outcome); False asks whether a second run is safe.
        """
        if idempotent is False:
            return False
        if method in SAFE_METHODS:
            return True
        if method != "tools/call" or params is None:
            return bool(idempotent)
        name = str(params.get("name"))
        keyed = (
            use_key
            and IDEMPOTENCY_META_KEY in (params.get("_meta") or {})
            and any(e.honours_keys for e in self.pool.endpoints)
        )
        listed = name in self.tools and time.monotonic() < self.tools_fresh_until
        if idempotent is None and not keyed and self.trust_annotations and not listed:
            # The annotations decide, and we have not seen them: look them up (read-only).
            try:
                await self._list_tools(max(0.0, deadline - anyio.current_time()))
            except MCPError as exc:
                logger.info("could not list tools to check %r's annotations: %s", name, exc)
                return False
        return tool_is_safe(
            name,
            idempotent=idempotent,
            trust_annotations=self.trust_annotations,
            tools=self.tools,
            keyed=keyed,
        )

    def only_the_key_makes_it_safe(
        self, method: str, params: dict[str, Any] | None, idempotent: bool | None
    ) -> bool:
        """A keyed ``tools/call`` that is not safe to run twice without the key."""
        return (
            method == "tools/call"
            and params is not None
            and IDEMPOTENCY_META_KEY in (params.get("_meta") or {})
            and not self.known_safe(method, params, idempotent)
        )

    async def keyed_target(
        self,
        session: Session,
        deadline: float,
        method: str,
        params: dict[str, Any] | None,
        doubt: tuple[Session, MCPError] | None,
        unrecorded: bool,
    ) -> Session | None:
        """Where this send of a keyed call goes (see ``keyed_route``).

        First send: where it was routed; a 2026-07-28 endpoint never asked is discovered
        first, so a later re-send knows whether this one was recorded. A re-send after
        an attempt in doubt went to an endpoint without the ledger: that run, if it
        happened, is recorded nowhere, so ``OutcomeUnknownError``.
        """
        if doubt is None:
            unreached = isinstance(session, StatelessSession) and (
                await self.endpoint_honours_keys(session, deadline) is None
            )
            return None if unreached else session  # None: not sent yet, ask again first
        if unrecorded:
            first_session, first = doubt
            raise await self.outcome_unknown(method, params, first_session, first)
        return await self.keyed_route(session, deadline, method, params, doubt)

    async def keyed_route(
        self,
        session: Session,
        deadline: float,
        method: str,
        params: dict[str, Any] | None,
        doubt: tuple[Session, MCPError],
    ) -> Session | None:
        """Where a keyed re-send may go: ``session`` if its endpoint honours keys, else (in
        the 2026-07-28 era) a route to one that does. None: no endpoint could be asked
        now (try again later). Every endpoint known not to: ``OutcomeUnknownError``.

        An endpoint never asked (a 2026-07-28 route) is discovered first: its own
        ``server/discover`` decides, never the capability of the endpoint that failed.
        """
        candidates = [session]
        if isinstance(session, StatelessSession) and len(self.endpoints) > 1:
            now = time.monotonic()
            candidates += [
                self.routes.to(e.url)
                for e in self.pool.endpoints
                if e.url != session.endpoint and not e.is_down(now) and e.honours_keys is not False
            ]
        unknown = False
        for candidate in candidates:
            honours = await self.endpoint_honours_keys(candidate, deadline)
            if honours:
                return candidate
            unknown = unknown or honours is None
        if unknown:
            return None
        first_session, first = doubt
        logger.info(
            "no reachable endpoint honours idempotency keys: %s is not sent again",
            self.what(method, params)[0],
        )
        raise await self.outcome_unknown(method, params, first_session, first)

    async def endpoint_honours_keys(self, session: Session, deadline: float) -> bool | None:
        """Did ``session``'s endpoint declare the extension itself? Asks it if never asked
        (2026-07-28); None when it could not be asked."""
        endpoint = self.pool.get(session.endpoint)
        if endpoint.honours_keys is None and isinstance(session, StatelessSession):
            try:
                raw = await session.request(
                    "server/discover",
                    None,
                    timeout=max(0.0, deadline - anyio.current_time()),
                    cancellable=False,
                )
                capabilities = mcp_types.ServerCapabilities.model_validate(
                    raw.get("capabilities") or {}
                )
            except (MCPError, ValidationError) as exc:
                logger.info("could not discover %s's capabilities: %s", endpoint.url, exc)
                if isinstance(exc, MCPError) and classify(exc) is not Failure.ANSWERED:
                    self.discover_error = exc
                    await self.endpoint_failed(endpoint)
                    return None  # not reached: ask again later
                endpoint.honours_keys = False  # it answered, and declared nothing usable
                return False
            endpoint.honours_keys = honours_idempotency_keys(capabilities)
        return endpoint.honours_keys

    async def ledger_lost_run(
        self,
        method: str,
        params: dict[str, Any] | None,
        idempotent: bool | None,
        deadline: float,
        exc: MCPError,
        doubt: tuple[Session, MCPError],
    ) -> bool:
        """The server's ledger says this call's first run started and never finished.

        True: a second run is safe anyway (read-only, idempotent), so the call gets a fresh
        key and is re-sent. Otherwise ``OutcomeUnknownError``, confirmed by the server.
        False: ``exc`` is some other answer.
        """
        if not (
            isinstance(exc, ServerError)
            and exc.code == LEDGER_STARTED_NOT_FINISHED
            and method == "tools/call"
            and params is not None
        ):
            return False
        if await self.safe(method, params, idempotent, deadline, use_key=False):
            params["_meta"] = {**(params.get("_meta") or {}), IDEMPOTENCY_META_KEY: new_key()}
            return True
        session, first = doubt
        raise await self.outcome_unknown(method, params, session, first, confirmed=exc) from exc

    def known_safe(
        self, method: str, params: dict[str, Any] | None, idempotent: bool | None
    ) -> bool:
        """Would running this call a second time be harmless? (No lookups: the deadline
        has passed.) Not ``safe``: an idempotency key does not count, as the caller's own
        retry would carry a new one."""
        if idempotent is not None:
            return idempotent
        if method in SAFE_METHODS:
            return True
        if method != "tools/call" or params is None:
            return False
        return tool_is_safe(
            str(params.get("name")),
            idempotent=None,
            trust_annotations=self.trust_annotations,
            tools=self.tools,
        )

    @staticmethod
    def what(method: str, params: dict[str, Any] | None) -> tuple[str, str | None]:
        tool = str(params.get("name")) if method == "tools/call" and params else None
        return (f"{method} of tool {tool!r}" if tool else method), tool

    async def deadline_passed(
        self,
        method: str,
        params: dict[str, Any] | None,
        idempotent: bool | None,
        limit: float | None,
        flight: InFlight,
    ) -> RequestTimeoutError:
        """The call's deadline passed: in doubt if it went out and a second run is not
        known to be harmless, else a plain timeout."""
        if (flight.left_queued or flight.queued_since is not None) and not flight.in_doubt:
            # Still in line for a connection: this attempt never went out.
            return RequestTimeoutError(
                f"{method} did not complete within {limit:g} s: it was queued{queue_note(flight)}"
                " and never sent",
                endpoint=flight.queue_endpoint or self.endpoint,
                session_id=self.session_id,
                hint="Raise max_connections (mind `ulimit -n`, see the connection limits docs),"
                " or pass a larger timeout=",
            )
        if flight.sent and not self.known_safe(method, params, idempotent):
            return await self.timed_out_in_doubt(method, params, limit, flight)
        queued = f"; it was queued{queue_note(flight)} first" if flight.queued_for >= 0.001 else ""
        return RequestTimeoutError(
            f"{method} did not complete within {limit:g} s{queued}",
            endpoint=self.endpoint,
            session_id=self.session_id,
            hint="Pass a larger timeout= if the server is just slow",
        )

    async def timed_out_in_doubt(
        self, method: str, params: dict[str, Any] | None, limit: float | None, flight: InFlight
    ) -> OutcomeUnknownTimeoutError:
        """The request went out and the deadline passed: it may have run."""
        return await self._unknown(
            OutcomeUnknownTimeoutError,
            method,
            params,
            request_id=flight.request_id,
            where=(self.endpoint, self.session_id),
            cause=f"no answer within {limit:g} s"
            + (f" (it was queued{queue_note(flight)} first)" if flight.queued_for >= 0.001 else ""),
            message=f"was sent but did not complete within {limit:g} s: it may have run on the"
            " server, so running it again could run it twice",
            stage="sent; the deadline passed before the answer",
        )

    def closed_in_flight(
        self,
        method: str,
        params: dict[str, Any] | None,
        idempotent: bool | None,
        flight: InFlight,
    ) -> ClientClosedError:
        """A call cut short by ``aclose``: say whether it may have run."""
        what, _ = self.what(method, params)
        if flight.sent and not self.known_safe(method, params, idempotent):
            return ClientClosedError(
                f"the client was closed while {what} was in flight: it may have run on the server",
                hint="Check the server's state before running it again",
            )
        return ClientClosedError(
            f"the client was closed while {what} was in flight",
            hint="Create a new ResilientClient to go on",
        )

    async def gave_up_in_doubt(
        self,
        method: str,
        params: dict[str, Any] | None,
        doubt: tuple[Session, MCPError],
        last: MCPError,
    ) -> OutcomeUnknownError:
        """An earlier attempt may have run, and the re-sends that would have told us failed."""
        session, first = doubt
        return await self._unknown(
            OutcomeUnknownTimeoutError
            if isinstance(last, RequestTimeoutError)
            else OutcomeUnknownError,
            method,
            params,
            request_id=first.request_id,
            where=(session.endpoint, session.session_id),
            cause=f"{first.message}; then {last.message}",
            message=f"was sent but its answer was lost ({first.message}); re-sending it did"
            f" not get through ({last.message}), so it may have run on the server",
            stage="sent; answer lost, and the re-sends failed",
        )

    async def outcome_unknown(
        self,
        method: str,
        params: dict[str, Any] | None,
        session: Session,
        exc: MCPError,
        *,
        confirmed: MCPError | None = None,
    ) -> OutcomeUnknownError:
        """The answer was lost and a re-send is not safe (or the ledger confirms a lost run)."""
        if confirmed is not None:
            # The server's idempotency ledger: it started under this call's key, its runner
            # stopped before recording a result, and it was not run again.
            # Said once, here; the server's own text stays on the ServerError (__cause__).
            message = (
                ": the server's idempotency ledger confirms it started under this call's key"
                f" and never finished (error {LEDGER_STARTED_NOT_FINISHED}); it was not run again"
            )
            stage = "started on the server, never finished (confirmed by its ledger)"
        else:
            message = (
                f"was sent but its answer was lost ({exc.message}); it is not known to be"
                " safe to send again"
            )
            stage = "sent; connection lost before the answer"
        return await self._unknown(
            OutcomeUnknownError,
            method,
            params,
            request_id=exc.request_id,
            where=(session.endpoint, session.session_id),
            cause=exc.message,
            message=message,
            stage=stage,
        )

    async def _unknown(
        self,
        kind: type[UnknownT],
        method: str,
        params: dict[str, Any] | None,
        *,
        request_id: int | str | None,
        where: tuple[str | None, str | None],
        cause: str,
        message: str,
        stage: str,
    ) -> UnknownT:
        """Count it, report the ``outcome_unknown`` event, build the error: in one place."""
        self.stats.outcome_unknown += 1
        what, tool = self.what(method, params)
        endpoint, session_id = where
        await self.events.emit(
            "outcome_unknown",
            endpoint=endpoint,
            session_id=session_id,
            method=method,
            tool=tool,
            request_id=request_id,
            error=cause,
        )
        separator = "" if message.startswith(":") else " "
        return kind(
            f"{what} (request id {request_id}){separator}{message}",
            method=method,
            tool=tool,
            request_id=request_id,
            stage=stage,
            endpoint=endpoint,
            session_id=session_id,
        )
