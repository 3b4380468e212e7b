"""``add_resilience``: the server half of the HAProxy + Redis deployment in one call.

It wires four independent parts onto a FastMCP 4 server, each of which can be turned
off: the idempotency ledger (middleware, plus the capability that tells clients keys
are honoured), the ``resume_session`` tool, ``/health`` that checks the store, and an
SSE event store for the handshake era (in the same Redis when the store is Redis).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types
from fastmcp import Context, FastMCP
from fastmcp.exceptions import (
    AuthorizationError,
    DisabledError,
    NotFoundError,
    ToolError,
    ValidationError,
)
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.event_store import EventStore
from fastmcp.server.extensions import ServerExtension
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import InputRequiredToolResult, ToolResult
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse

from .._classify import IDEMPOTENCY_CAPABILITY, IDEMPOTENCY_META_KEY
from ._drain import DEFAULT_DRAIN_TIMEOUT, Drain
from ._drain import attach as attach_drain
from ._ledger import (
    DEFAULT_LEASE,
    DEFAULT_RESULT_TTL,
    DEFAULT_WAIT,
    ConflictsExhausted,
    Ledger,
    Unrecorded,
    conflict_error,
    fingerprint,
)
from ._state import DEFAULT_SESSION_TTL, SessionState, state_key
from ._store import Store, StoreError
from ._tx import (
    Transaction,
    TransactionalOptions,
    current_transaction,
    run_attempts,
    transactional_options,
)

__all__ = [
    "DEFAULT_SESSION_TTL",
    "REPLAYED_META_KEY",
    "IdempotencyMiddleware",
    "Resilience",
    "SessionState",
    "add_resilience",
    "default_principal",
    "session_state",
]

logger = logging.getLogger("mcp_resilient.server")

REPLAYED_META_KEY = "io.github.mcp-resilient/replayed"
"""Set to ``true`` in ``_meta`` of a result served from the ledger instead of a new run."""
_HEALTH_TIMEOUT = 2.0
_OWNERS_CACHED = 10_000
_MAX_KEY_LENGTH = 255
_content_adapter: TypeAdapter[list[mcp_types.ContentBlock]] = TypeAdapter(
    list[mcp_types.ContentBlock]
)

#: Raised before a tool's body runs (FastMCP's lookup, argument validation, auth checks).
_REFUSALS = (NotFoundError, DisabledError, ValidationError, AuthorizationError)

Principal = Callable[[Context | None], str]
ResumeSummary = Callable[["SessionState"], Awaitable[Mapping[str, Any]]]


def default_principal(_ctx: Context | None = None) -> str:
    """Who is calling: the access token's issuer and subject (or client id), else ``anonymous``.

    Without authentication there is no identity to bind to: see the trust model in
    docs/exactly-once.md (the key, or the session id, is then the secret).
    """
    token = get_access_token()
    if token is None:
        return "anonymous"
    claims = token.claims or {}
    subject = claims.get("sub") or token.subject or token.client_id
    return f"principal:{claims.get('iss', '')}:{subject}"


class IdempotencyMiddleware(Middleware):
    """Runs each keyed ``tools/call`` through the ledger; calls without a key pass through.

    With ``kit``, ``@transactional`` tools run in a transaction whose commit carries the
    ledger's outcome (keyed) or stands alone (unkeyed, or ``ledger`` None).
    """

    def __init__(
        self,
        ledger: Ledger | None,
        *,
        principal: Principal = default_principal,
        kit: Resilience | None = None,
    ) -> None:
        if ledger is None and kit is None:
            raise ValueError("IdempotencyMiddleware needs a ledger, a kit, or both")
        self.ledger = ledger
        self.principal = principal
        self.kit = kit

    @staticmethod
    def _key(context: MiddlewareContext[mcp_types.CallToolRequestParams]) -> str | None:
        meta: Mapping[str, Any] | None = None
        ctx = context.fastmcp_context
        request_context = ctx.request_context if ctx is not None else None
        if request_context is not None:
            meta = request_context.meta
        if meta is None:
            meta = context.message.meta
        key = meta.get(IDEMPOTENCY_META_KEY) if meta else None
        if key is None:
            return None
        if (
            not isinstance(key, str)
            or not 0 < len(key) <= _MAX_KEY_LENGTH
            or not all("\x21" <= ch <= "\x7e" for ch in key)
        ):
            raise MCPError(
                mcp_types.INVALID_PARAMS,
                f"{IDEMPOTENCY_META_KEY} must be 1 to {_MAX_KEY_LENGTH} visible ASCII characters",
            )
        return key

    @staticmethod
    async def _tool(context: MiddlewareContext[Any], name: str) -> object | None:
        ctx = context.fastmcp_context
        return None if ctx is None else await ctx.fastmcp.get_tool(name)

    @staticmethod
    def _read_only(tool: object | None) -> bool:
        annotations = getattr(tool, "annotations", None)
        return bool(annotations is not None and annotations.read_only_hint)

    async def on_call_tool(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        key = self._key(context) if self.ledger is not None else None
        message = context.message
        if key is None and self.kit is None:
            return await call_next(context)
        tool = await self._tool(context, message.name)
        if self._read_only(tool):
            key = None  # nothing to remember for a read: running it again is the right answer
        options = transactional_options(tool) if self.kit is not None else None
        if options is not None:
            return await self._transactional(context, call_next, options, key)
        ledger = self.ledger
        if key is None or ledger is None:
            return await call_next(context)
        fp = fingerprint(message.name, message.arguments or {})
        scope = self.principal(context.fastmcp_context)
        first: dict[str, Any] = {}

        async def run() -> str:
            return await _run_once(context, call_next, first)

        return await _answer(first, lambda: ledger.run(scope, key, fp, run))

    async def _transactional(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
        options: TransactionalOptions,
        key: str | None,
    ) -> ToolResult:
        """Run a ``@transactional`` tool: staged writes, one commit with the outcome."""
        kit = self.kit
        assert kit is not None
        ledger = self.ledger
        message = context.message
        first: dict[str, Any] = {}

        async def body() -> str:
            first.clear()
            encoded = await _run_once(context, call_next, first)
            if "error" in first:
                _abandon_writes()
            return encoded

        after: list[Callable[[], Awaitable[None]]] = []

        def on_commit(tx: Transaction) -> None:
            kit.remember_owners(tx.owned)
            after.extend(tx.after)

        async def attempts(record: str | None, owner: str | None) -> str:
            try:
                return await run_attempts(
                    kit.store,
                    options.attempts,
                    body,
                    record=record,
                    owner=owner,
                    record_ttl=ledger.result_ttl if ledger is not None else 0.0,
                    on_commit=on_commit,
                )
            except ConflictsExhausted as exc:
                raise conflict_error(key, options.attempts) from exc

        ctx = context.fastmcp_context
        if key is None or ledger is None or ctx is None:

            async def unkeyed() -> tuple[str, bool]:
                return await attempts(None, None), True

            answer = await _answer(first, unkeyed)
        else:
            fp = fingerprint(message.name, message.arguments or {})
            record_key = ledger.transactional_record_key(
                kit.state_prefix(ctx), self.principal(ctx), key
            )
            answer = await _answer(
                first, lambda: ledger.run_transactional(record_key, key, fp, attempts)
            )
        for callback in after:  # the committed run's, once the ledger is done with it
            await callback()
        return answer


async def _run_once(
    context: MiddlewareContext[mcp_types.CallToolRequestParams],
    call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
    first: dict[str, Any],
) -> str:
    """One run of the tool: its outcome encoded for the ledger (kept in ``first``).

    Raises ``Unrecorded`` for what is not the call's outcome: a refusal before the body
    ran, or a 2026-07-28 ``input_required`` round.
    """
    try:
        result = await call_next(context)
    except _REFUSALS as exc:
        # Refused before the body ran: no outcome, nothing to remember. A re-send
        # meets the same checks (and runs once if they pass now).
        raise Unrecorded(exc) from exc
    except ToolError as exc:
        first["error"] = exc
        return json.dumps({"toolError": str(exc)})
    except MCPError as exc:
        first["error"] = exc
        return json.dumps({"error": {"code": exc.code, "message": exc.message, "data": exc.data}})
    if isinstance(result, InputRequiredToolResult):
        # A 2026-07-28 round: the call goes on in the next leg, under the same key.
        raise Unrecorded(result)
    first["result"] = result
    return _encode_result(result)


async def _answer(
    first: dict[str, Any], run: Callable[[], Awaitable[tuple[str, bool]]]
) -> ToolResult:
    """What the caller gets: this run's result or error, or the recorded outcome."""
    try:
        encoded, ran = await run()
    except Unrecorded as answer:
        if isinstance(answer.value, BaseException):
            raise answer.value from None
        leg: ToolResult = answer.value
        return leg
    if ran:
        if "error" in first:
            raise first["error"]
        result: ToolResult = first["result"]
        return result
    return _decode_outcome(encoded)


def _abandon_writes() -> None:
    """A run that ends in an error writes nothing (its reads still must hold at commit)."""
    tx = current_transaction()
    if tx is not None:
        tx.staged.writes.clear()
        tx.after.clear()


def _encode_result(result: ToolResult) -> str:
    return json.dumps(
        {
            "result": {
                "content": [
                    block.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for block in result.content
                ],
                "structuredContent": result.structured_content,
                "meta": result.meta,
                "isError": result.is_error,
            }
        },
        default=str,
    )


def _decode_outcome(encoded: str) -> ToolResult:
    """A stored outcome as the first run produced it (errors are raised again)."""
    outcome = json.loads(encoded)
    if "toolError" in outcome:
        raise ToolError(str(outcome["toolError"]))
    if "error" in outcome:
        error = outcome["error"]
        raise MCPError(int(error["code"]), str(error["message"]), error.get("data"))
    result = outcome["result"]
    meta = dict(result.get("meta") or {})
    meta[REPLAYED_META_KEY] = True
    return ToolResult(
        content=_content_adapter.validate_python(result["content"]),
        structured_content=result.get("structuredContent"),
        meta=meta,
        is_error=bool(result.get("isError")),
    )


class _IdempotencyExtension(ServerExtension):
    """Advertises the capability under ``extensions`` (the stateless era's ``server/discover``)."""

    identifier = IDEMPOTENCY_CAPABILITY

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)


@dataclass
class Resilience:
    """What ``add_resilience`` set up; ``state(ctx)`` is the session state helper."""

    mcp: FastMCP
    store: Store
    ledger: Ledger | None
    event_store: EventStore | None
    session_ttl: float | None
    principal: Principal
    _owned: dict[str, tuple[str, float]] = field(default_factory=dict)
    drain: Drain | None = None
    """SIGTERM handling (``add_resilience(drain_timeout=...)``); hand it to ``serve``."""

    def state(self, ctx: Context) -> SessionState:
        """This request's state: its session's (handshake era) or its state id's (2026-07-28).

        Without a state id in the 2026-07-28 era, the helper raises a ``ToolError`` that
        says how to send one at its first use (nothing is written). Inside a
        ``@transactional`` tool its writes are staged in the run's transaction.
        """
        key = state_key(ctx)
        missing = key if isinstance(key, str) else None
        kind, ident = key if not isinstance(key, str) else ("state", "")
        tx = current_transaction()
        store: Store = self.store if tx is None else tx.staged
        owned = self._owned if tx is None else tx.owned
        state = SessionState(
            store,
            ident,
            principal=self.principal(ctx),
            ttl=self.session_ttl,
            kind=kind,
            missing=missing,
            _owned=owned,
        )
        if tx is not None and state.prefix in self._owned:
            # What this process already checked; a transaction's own checks count once
            # it committed (remember_owners).
            owned.setdefault(state.prefix, self._owned[state.prefix])
        return state

    def state_prefix(self, ctx: Context) -> str | None:
        """The key prefix of this request's state (None: the request has none, such as a
        2026-07-28 request without a state id)."""
        if isinstance(state_key(ctx), str):
            return None
        return self.state(ctx).prefix

    def remember_owners(self, owners: Mapping[str, tuple[str, float]]) -> None:
        """Owner checks a transaction committed: later runs need not stage them again."""
        if len(self._owned) + len(owners) >= _OWNERS_CACHED:
            self._owned.clear()
        self._owned.update(owners)


_kits: weakref.WeakKeyDictionary[FastMCP, Resilience] = weakref.WeakKeyDictionary()


def session_state(ctx: Context) -> SessionState:
    """The session state helper of the server ``ctx`` belongs to (after ``add_resilience``)."""
    kit = _kits.get(ctx.fastmcp)
    if kit is None:
        raise RuntimeError("session_state needs add_resilience(mcp, store) on this server")
    return kit.state(ctx)


def _event_store_for(store: Store) -> EventStore:
    """Redis-backed when the store is Redis (replicas share events), else in memory."""
    url = getattr(store, "url", None)
    client = getattr(store, "event_store_client", None)
    if client is not None or (store.name == "redis" and isinstance(url, str)):
        from key_value.aio.stores.redis import RedisStore as KeyValueRedisStore

        # Sentinel and cluster: the store's own client (events are one key each, so a
        # cluster spreads them over its slots).
        if client is not None:
            return EventStore(storage=KeyValueRedisStore(client=client))
        return EventStore(storage=KeyValueRedisStore(url=str(url)))
    return EventStore()


def add_resilience(
    mcp: FastMCP,
    store: Store,
    resume_tool: bool | str | None = True,
    idempotency: bool | None = True,
    health_route: str | None = "/health",
    event_store: bool | EventStore | None = True,
    *,
    lease: float = DEFAULT_LEASE,
    result_ttl: float = DEFAULT_RESULT_TTL,
    wait: float = DEFAULT_WAIT,
    session_ttl: float | None = DEFAULT_SESSION_TTL,
    principal: Principal = default_principal,
    health_info: Callable[[], Mapping[str, Any]] | None = None,
    retry_interval: int | None = 1000,
    resume_summary: ResumeSummary | None = None,
    drain_timeout: float | None = DEFAULT_DRAIN_TIMEOUT,
) -> Resilience:
    """Make ``mcp`` a replica that clients can fail over to without losing or repeating work.

    Args:
        mcp: The FastMCP 4 server.
        store: ``RedisStore`` (replicas on several machines) or ``SQLiteStore`` (one machine).
        resume_tool: Add ``resume_session(old_session_id)`` (a string renames it).
        idempotency: Add the ledger middleware and advertise the capability.
        health_route: Path of the health check that pings the store (503 when it fails).
        event_store: SSE event store for ``mcp.http_app()`` (``True``: in the same Redis,
            or in memory for SQLite); an ``EventStore`` instance is used as given.
        lease: Seconds an in-flight call's claim lives without renewal.
        result_ttl: Seconds a call's record is kept (the window for re-sends).
        wait: Seconds a duplicate waits for a running first call.
        session_ttl: Sliding TTL of session state (``None``: no expiry).
        principal: Who the caller is (scopes keys and binds sessions).
        health_info: Extra fields for the health answer.
        retry_interval: SSE ``retry:`` hint (ms) when the event store is on.
        resume_summary: Extra fields for ``resume_session``'s answer, read from the new
            session's state after the copy (e.g. what was carried over).
        drain_timeout: Graceful drain (``kit.drain``; run the app with
            ``mcp_resilient.server.serve``): after SIGTERM, in-flight calls get this many
            seconds to finish. ``None``: no drain.
    """
    ledger: Ledger | None = None
    if idempotency:
        ledger = Ledger(store, lease=lease, result_ttl=result_ttl, wait=wait)
        settings = {
            "version": 1,
            "metaKey": IDEMPOTENCY_META_KEY,
            "leaseMs": int(lease * 1000),
            "resultTtlMs": int(result_ttl * 1000),
        }
        # Handshake-era initialize keeps `experimental`; the SDK strips `extensions`
        # there, while server/discover carries both.
        mcp.experimental_capabilities[IDEMPOTENCY_CAPABILITY] = settings
        mcp.add_extension(_IdempotencyExtension(settings))

    events: EventStore | None = None
    if isinstance(event_store, EventStore):
        events = event_store
    elif event_store:
        events = _event_store_for(store)

    kit = Resilience(mcp, store, ledger, events, session_ttl, principal)
    _kits[mcp] = kit
    # Always on: @transactional tools commit atomically with or without the ledger.
    mcp.add_middleware(IdempotencyMiddleware(ledger, principal=principal, kit=kit))

    if resume_tool:
        name = resume_tool if isinstance(resume_tool, str) else None
        _add_resume_tool(mcp, kit, name, resume_summary)
    if health_route:
        _add_health(mcp, kit, health_route, health_info)
    if drain_timeout is not None:
        kit.drain = Drain(drain_timeout=drain_timeout, health_path=health_route or None)
        attach_drain(mcp, kit.drain)
    if events is not None:
        _default_event_store(mcp, events, retry_interval)
    return kit


def _add_resume_tool(
    mcp: FastMCP, kit: Resilience, name: str | None, summary: ResumeSummary | None
) -> None:
    async def resume_session(ctx: Context, old_session_id: str) -> dict[str, Any]:
        """Copy an old session's state into this one (replacing it); idempotent.

        A client whose session was lost (its server died) calls this on its new session.
        Refused when the old session belongs to another principal.
        """
        state = kit.state(ctx)
        found = await state.take_over(old_session_id)
        answer = {"old_session_id": old_session_id, "session_id": ctx.session_id, "found": found}
        if summary is not None:
            answer.update(await summary(state))
        return answer

    mcp.tool(
        resume_session,
        name=name or "resume_session",
        annotations=mcp_types.ToolAnnotations(
            read_only_hint=False,
            idempotent_hint=True,
            destructive_hint=True,
            open_world_hint=False,
        ),
    )


def _add_health(
    mcp: FastMCP,
    kit: Resilience,
    path: str,
    health_info: Callable[[], Mapping[str, Any]] | None,
) -> None:
    async def health(_request: Request) -> JSONResponse:
        """Ready when the store answers: what a balancer needs to route here."""
        error: str | None = None
        try:
            with anyio.fail_after(_HEALTH_TIMEOUT):
                await kit.store.ping()
        except (StoreError, TimeoutError) as exc:
            # Said to anyone who asks: what is down, never how to reach it.
            logger.warning("health: the %s store failed: %s", kit.store.name, exc or "timeout")
            error = f"the {kit.store.name} store did not answer"
        body: dict[str, Any] = {
            "status": "ok" if error is None else "unavailable",
            "store": kit.store.name,
            "idempotency": kit.ledger is not None,
            "event_store": kit.event_store is not None,
        }
        if health_info is not None:
            body.update(health_info())
        if error is not None:
            body["error"] = error
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    mcp.custom_route(path, methods=["GET"])(health)


def _default_event_store(mcp: FastMCP, events: EventStore, retry_interval: int | None) -> None:
    """Make ``mcp.http_app()`` (and ``mcp.run``) use the kit's event store by default."""
    original = mcp.http_app

    def http_app(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("event_store") is None:
            kwargs["event_store"] = events
            if kwargs.get("retry_interval") is None:
                kwargs["retry_interval"] = retry_interval
        return original(*args, **kwargs)

    mcp.http_app = http_app  # type: ignore[method-assign]
