"""``MockMCPServer``: an in-process fake MCP server speaking Streamable HTTP, in either era.

The handshake era (2025-03-26 ... 2025-11-25: ``initialize``, sessions, the GET stream) is
served by default; ``eras="stateless"`` or ``eras="both"`` add the stateless revision
(2026-07-28: per-request ``_meta``, ``server/discover``, no sessions), told apart per request
by the ``MCP-Protocol-Version`` header, as FastMCP and the official SDK do.

It answers ``httpx.Request`` objects directly (``await server.handle(request)``), so it can sit
behind respx (``MockNetwork``, the pytest fixtures) or an ``httpx.MockTransport``. Every
endpoint URL of one server shares one backend: sessions, event store and ``state`` survive
across URLs, as on a real cluster behind a shared store.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import anyio
import httpx
import mcp_types as mt
from mcp_types.methods import serialize_server_result
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    KNOWN_PROTOCOL_VERSIONS,
    MODERN_PROTOCOL_VERSIONS,
    is_version_at_least,
)
from pydantic import BaseModel, ValidationError

from ._faults import (
    MAX_DELAY_SECONDS,
    ConnectErrorFault,
    CutStreamFault,
    DelayFault,
    FaultScript,
    GarbageFault,
    LoseResponseFault,
    PollFault,
    RedirectFault,
    RespondAsFault,
    ResponseMode,
    StatusFault,
    normalize_url,
)
from ._features import (
    LOG_LEVELS,
    InputRequired,
    PromptSpec,
    ResourceSpec,
    RPCError,
    TemplateSpec,
    ToolContext,
    ToolSpec,
    build_prompt,
    build_tool,
    call_with,
    dump_model,
    error_result,
    jsonrpc_message,
    read_signature,
    template_pattern,
    to_call_result,
    to_prompt_result,
    to_read_result,
    validation_message,
)
from ._records import Era, RecordedRequest, RequestLog, ToolExecution
from ._sse import Cut, EventBody, EventStore, StreamLog, Waker
from ._stateless import (
    CACHEABLE_METHODS,
    HANDSHAKE_ONLY_METHODS,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    Refusal,
    check_envelope,
    check_param_headers,
    http_status_for,
    unsupported_version,
)

if TYPE_CHECKING:
    from ._network import MockNetwork

__all__ = [
    "ALL_VERSIONS",
    "DEFAULT_URL",
    "STATELESS_VERSIONS",
    "SUPPORTED_VERSIONS",
    "Eras",
    "MockMCPServer",
    "MockSession",
]

logger = logging.getLogger("mcp_resilient.testing")

DEFAULT_URL = "http://mcp.test/mcp"
"""Where the ``mcp_mock`` fixture serves: a reserved test domain that never resolves."""

SUPPORTED_VERSIONS: tuple[str, ...] = ("2025-11-25", "2025-06-18", "2025-03-26")
"""Handshake-era versions the fake negotiates by default, newest first."""

STATELESS_VERSIONS: tuple[str, ...] = ("2026-07-28",)
"""Stateless-era versions (no ``initialize``, no sessions) the fake serves with ``eras``."""

ALL_VERSIONS: tuple[str, ...] = (*STATELESS_VERSIONS, *SUPPORTED_VERSIONS)
"""Both eras, newest first: what ``eras="both"`` serves (as FastMCP 4 and ``mcp`` 2.x do)."""

Eras = Literal["handshake", "stateless", "both"]
"""Which protocol eras a fake serves."""

_ERA_VERSIONS: dict[str, tuple[str, ...]] = {
    "handshake": SUPPORTED_VERSIONS,
    "stateless": STATELESS_VERSIONS,
    "both": ALL_VERSIONS,
}

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
MethodHandler = Callable[[dict[str, Any], ToolContext], Any]

JSON = "application/json"
SSE = "text/event-stream"


class MockSession:
    """One session of the fake, shared by every endpoint of its server.

    ``data`` is free for tests and tools (e.g. what a ``resume_session`` tool copies over).
    """

    def __init__(
        self,
        session_id: str | None,
        protocol_version: str,
        *,
        endpoint: str | None,
        event_ids: bool,
        client_info: mt.Implementation | None = None,
        client_capabilities: mt.ClientCapabilities | None = None,
        stateless: bool = False,
    ) -> None:
        self.id = session_id
        self.stateless = stateless
        """True for the per-request context of a stateless (2026-07-28) request."""
        self.listen_id: Any = None
        """Stateless: the id of the ``subscriptions/listen`` request this context serves."""
        self.listen_filter: dict[str, Any] = {}
        """Stateless: the notification types that listen stream opted in to (acknowledged)."""
        self.protocol_version = protocol_version
        self.endpoint = endpoint
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.initialized = False
        self.expired = False
        self.data: dict[str, Any] = {}
        self.log_level: str | None = None
        self.subscriptions: set[str] = set()
        self.cancelled: list[Any] = []
        self.client_responses: dict[Any, dict[str, Any]] = {}
        self.events = EventStore(event_ids)
        self.listen: StreamLog = self.events.new_stream("listen")
        self.listeners = 0
        self.listen_generation = 0
        self.waker = Waker()

    def wants_log(self, level: str) -> bool:
        """Whether ``logging/setLevel`` (stateless: ``_meta`` logLevel) lets ``level`` through.

        A stateless request without a log level gets no log messages at all (the spec's rule).
        """
        if self.log_level is None and self.stateless:
            return False
        if self.log_level is None or level not in LOG_LEVELS:
            return True
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.log_level)

    def _end_listen_streams(self) -> None:
        """End the GET streams open now; later ones (a newer generation) are not affected."""
        self.listen_generation += 1
        self.waker.wake()

    @property
    def pending_messages(self) -> list[dict[str, Any]]:
        """Listen-stream messages queued but not yet sent on any GET stream."""
        return [e.message for e in self.listen.events[self.listen.delivered :] if e.message]

    def __repr__(self) -> str:
        state = "stateless" if self.stateless else "expired" if self.expired else "live"
        return f"<MockSession {self.id} {self.protocol_version} {state}>"


@dataclass
class _Plain:
    """A non-JSON-RPC answer (errors, 202, DELETE)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""


@dataclass
class _Answer:
    """The outcome of one JSON-RPC message: what to stream, then the response (if any)."""

    session: MockSession | None
    messages: list[dict[str, Any]]
    response: dict[str, Any] | None
    mode: ResponseMode
    new_session: bool = False


@dataclass
class _Listen:
    """A GET: a live listen stream or the replay of a stream after ``Last-Event-ID``."""

    session: MockSession
    log: StreamLog
    start: int
    live: bool


_Reply = _Plain | _Answer | _Listen


def _result_response(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _error_response(request_id: Any, error: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _rpc_error(status: int, request_id: Any, code: int, message: str) -> _Plain:
    body = _error_response(request_id, {"code": code, "message": message})
    return _Plain(status, {"content-type": JSON}, json.dumps(body).encode())


def _sse_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers of an SSE answer; the caller's (session id...) go last and win."""
    return {"content-type": SSE, "cache-control": "no-cache", **headers}


def _media_types(header: str | None) -> set[str]:
    if not header:
        return set()
    return {part.split(";", 1)[0].strip().lower() for part in header.split(",")}


def _uri_param(params: dict[str, Any]) -> str:
    uri = params.get("uri")
    if not isinstance(uri, str):
        raise RPCError(-32602, "Missing uri")
    return uri


_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
_LISTEN_KEYS = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
_LISTEN_KEYS_ALL = (*_LISTEN_KEYS.values(), "resourceSubscriptions")


def _for_subscription(session: MockSession, message: dict[str, Any]) -> dict[str, Any] | None:
    """``message`` tagged for a stateless listen stream, or None if it did not opt in to it.

    Log and progress messages never go there: they belong to the request they concern.
    """
    method = message.get("method")
    params = dict(message.get("params") or {})
    opted = session.listen_filter
    if method in _LISTEN_KEYS:
        wanted = bool(opted.get(_LISTEN_KEYS[method]))
    elif method == "notifications/resources/updated":
        wanted = params.get("uri") in (opted.get("resourceSubscriptions") or [])
    else:
        wanted = False
    if not wanted or "id" in message:
        return None
    params["_meta"] = {**(params.get("_meta") or {}), _SUBSCRIPTION_ID: session.listen_id}
    return {**message, "params": params}


def _validated(model: type[M], value: Any) -> M | None:
    """``value`` as ``model``, or None when it is absent or not valid (the fake is lenient)."""
    if value is None:
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _visible_ascii(value: str) -> bool:
    return bool(value) and all(0x21 <= ord(c) <= 0x7E for c in value)


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        read = timeout.get("read")
        if isinstance(read, int | float):
            return float(read)
    return None


def _decorate(fn: F | None, register: Callable[[F], object]) -> F | Callable[[F], F]:
    """Serve ``@server.tool`` and ``@server.tool(...)`` alike: register, hand ``fn`` back."""

    def decorator(func: F) -> F:
        register(func)
        return func

    return decorator(fn) if fn is not None else decorator


def _reader_decorator(
    add: Callable[..., object],
    uri: str,
    name: str | None,
    title: str | None,
    description: str | None,
    mime_type: str | None,
) -> Callable[[F], F]:
    """The decorator form of ``add_resource`` / ``add_resource_template``.

    Both name the entry after the decorated function unless ``name`` is given.
    """

    def decorator(func: F) -> F:
        add(
            uri,
            func,
            name=name or func.__name__,
            title=title,
            description=description,
            mime_type=mime_type,
        )
        return func

    return decorator


class MockMCPServer:
    """A fake MCP server (Streamable HTTP; protocol 2025-03-26 to 2025-11-25, and 2026-07-28).

    Serve it with the ``mcp_mock`` fixture, ``with MockMCPServer() as server:`` (respx), or
    ``httpx.MockTransport(server.handle)``. Options:

    - ``response_mode``: ``"sse"`` (default, as real servers), ``"json"`` or ``"auto"`` (SSE
      only when a tool emitted notifications first).
    - ``stateful``: issue ``Mcp-Session-Id`` and enforce it (400 without, 404 unknown).
    - ``get_stream`` / ``allow_delete``: False answers 405 to GET / DELETE.
    - ``sse_event_ids``, ``sse_priming``, ``sse_retry_ms``: resumability knobs.
    - ``page_size``: paginate the list methods.
    - ``auth_token``: require ``Authorization: Bearer <token>`` (else 401).
    - ``allowed_origins``: answer 403 to an ``Origin`` not listed.
    - ``eras``: ``"handshake"`` (default), ``"stateless"`` (2026-07-28 only) or ``"both"``.
    - ``cache_ttl_ms`` / ``cache_scope``: the caching hints of stateless list results.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        name: str = "mock-mcp",
        version: str = "0.0.0",
        instructions: str | None = None,
        protocol_versions: Sequence[str] | None = None,
        response_mode: ResponseMode = "sse",
        stateful: bool = True,
        get_stream: bool = True,
        allow_delete: bool = True,
        single_listen_stream: bool = True,
        sse_event_ids: bool = True,
        sse_priming: bool = False,
        sse_retry_ms: int | None = None,
        page_size: int | None = None,
        auth_token: str | None = None,
        allowed_origins: Collection[str] | None = None,
        capabilities: mt.ServerCapabilities | None = None,
        session_ids: Callable[[int], str] | None = None,
        eras: Eras | None = None,
        cache_ttl_ms: int = 0,
        cache_scope: Literal["private", "public"] = "private",
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("a MockMCPServer needs at least one URL")
        self.urls: list[str] = urls
        self._endpoints: dict[str, str] = {normalize_url(u): u for u in urls}
        if len(self._endpoints) != len(urls):
            raise ValueError("the same URL is listed twice")
        self._hosts = {(httpx.URL(u).scheme, normalize_url(u).rsplit("/", 1)[0]) for u in urls}
        if eras is not None and eras not in _ERA_VERSIONS:
            raise ValueError(f"eras must be 'handshake', 'stateless' or 'both', not {eras!r}")
        era_versions = _ERA_VERSIONS[eras or "handshake"]
        if protocol_versions is None:
            protocol_versions = era_versions
        unknown = [v for v in protocol_versions if v not in KNOWN_PROTOCOL_VERSIONS]
        if unknown or not protocol_versions:
            raise ValueError(f"unknown protocol versions: {unknown or 'none given'}")
        outside = [v for v in protocol_versions if eras is not None and v not in era_versions]
        if outside:
            raise ValueError(f"protocol versions {outside} are not in the eras {eras!r}")
        self.protocol_versions: tuple[str, ...] = tuple(
            sorted(protocol_versions, key=KNOWN_PROTOCOL_VERSIONS.index, reverse=True)
        )
        self.handshake_versions: tuple[str, ...] = tuple(
            v for v in self.protocol_versions if v in HANDSHAKE_PROTOCOL_VERSIONS
        )
        """The versions served with ``initialize`` and sessions (empty: stateless only)."""
        self.stateless_versions: tuple[str, ...] = tuple(
            v for v in self.protocol_versions if v in MODERN_PROTOCOL_VERSIONS
        )
        """The versions served per request, without a session (empty: handshake only)."""
        self.cache_ttl_ms = cache_ttl_ms
        self.cache_scope: Literal["private", "public"] = cache_scope
        self.name = name
        self.version = version
        self.instructions = instructions
        self.response_mode: ResponseMode = response_mode
        self.stateful = stateful
        self.get_stream = get_stream
        self.allow_delete = allow_delete
        self.single_listen_stream = single_listen_stream
        self.sse_event_ids = sse_event_ids
        self.sse_priming = sse_priming
        self.sse_retry_ms = sse_retry_ms
        self.page_size = page_size
        self.auth_token = auth_token
        self.allowed_origins = set(allowed_origins) if allowed_origins is not None else None
        self.capabilities = capabilities or mt.ServerCapabilities(
            tools=mt.ToolsCapability(list_changed=True),
            resources=mt.ResourcesCapability(subscribe=True, list_changed=True),
            prompts=mt.PromptsCapability(list_changed=True),
            logging=mt.LoggingCapability(),
        )
        self._session_ids = session_ids or self._default_session_id
        self._seed = hashlib.sha256("|".join(sorted(self._endpoints)).encode()).hexdigest()[:8]

        self.faults = FaultScript()
        """Scripted faults (see ``FaultScript``)."""
        self.requests = RequestLog()
        """Every HTTP request received, in order."""
        self.state: dict[str, Any] = {}
        """Backend state shared by every endpoint, session and tool."""
        self.tool_executions: list[ToolExecution] = []
        """Every tool run (calls whose function actually executed)."""
        self.client_responses: dict[Any, dict[str, Any]] = {}
        """Client answers to server-to-client requests (pings...), by request id."""

        self._tools: dict[str, ToolSpec] = {}
        self._resources: dict[str, ResourceSpec] = {}
        self._templates: list[TemplateSpec] = []
        self._prompts: dict[str, PromptSpec] = {}
        self._methods: dict[str, MethodHandler] = {}
        self._sessions: dict[str, MockSession] = {}
        self._expired: dict[str, MockSession] = {}
        self._subscriptions: list[MockSession] = []
        self._anonymous = MockSession(
            None,
            (self.handshake_versions or self.protocol_versions)[0],
            endpoint=None,
            event_ids=sse_event_ids,
        )
        self._session_count = 0
        self._server_request_count = 0
        self._down: set[str] = set()
        self._closed = False
        self._network: MockNetwork | None = None

    # -- defining the server ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The first endpoint URL."""
        return self.urls[0]

    @property
    def eras(self) -> tuple[Era, ...]:
        """The protocol eras this server serves: ``("handshake",)``, ``("stateless",)`` or both."""
        served: list[Era] = []
        if self.stateless_versions:
            served.append("stateless")
        if self.handshake_versions:
            served.append("handshake")
        return tuple(served)

    @overload
    def tool(self, fn: F, /) -> F: ...

    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: mt.ToolAnnotations | Mapping[str, Any] | None = None,
        read_only: bool | None = None,
        destructive: bool | None = None,
        idempotent: bool | None = None,
        open_world: bool | None = None,
        input_schema: Mapping[str, Any] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        response_mode: ResponseMode | None = None,
    ) -> Callable[[F], F]: ...

    def tool(self, fn: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
        """Register a tool (decorator, with or without arguments).

        ``read_only`` / ``destructive`` / ``idempotent`` / ``open_world`` set the annotation
        hints; the docstring's first paragraph is the description. The overloads above spell
        out the options; they go to ``add_tool`` unchanged.
        """
        return _decorate(fn, lambda func: self.add_tool(func, **options))

    def add_tool(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: mt.ToolAnnotations | Mapping[str, Any] | None = None,
        read_only: bool | None = None,
        destructive: bool | None = None,
        idempotent: bool | None = None,
        open_world: bool | None = None,
        input_schema: Mapping[str, Any] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        response_mode: ResponseMode | None = None,
    ) -> mt.Tool:
        """Register ``fn`` (sync or async) as a tool; returns its ``mcp_types.Tool``."""
        spec = build_tool(
            fn,
            name=name,
            title=title,
            description=description,
            annotations=annotations,
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent,
            open_world=open_world,
            input_schema=input_schema,
            output_schema=output_schema,
            response_mode=response_mode,
        )
        self._tools[spec.name] = spec
        return spec.tool

    def remove_tool(self, name: str) -> None:
        """Unregister a tool (call ``notify_tools_list_changed()`` to tell clients)."""
        del self._tools[name]

    @property
    def tools(self) -> list[mt.Tool]:
        """The registered tools, as ``tools/list`` returns them."""
        return [spec.tool for spec in self._tools.values()]

    def resource(
        self,
        uri: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> Callable[[F], F]:
        """Register a function as the reader of resource ``uri`` (decorator)."""
        return _reader_decorator(self.add_resource, uri, name, title, description, mime_type)

    def add_resource(
        self,
        uri: str,
        content: str | bytes | Callable[..., Any],
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> mt.Resource:
        """Register a resource with fixed ``content`` (str or bytes) or a reader function.

        A reader returns str, bytes, resource contents or a ``ReadResourceResult``.
        """
        if callable(content):
            reader: Callable[..., Any] = content
        else:
            fixed = content

            def reader() -> str | bytes:
                return fixed

        resource = mt.Resource(
            uri=uri,
            name=name or uri,
            title=title,
            description=description,
            mime_type=mime_type or ("text/plain" if isinstance(content, str) else None),
        )
        self._resources[uri] = ResourceSpec(resource, reader, read_signature(reader))
        return resource

    def resource_template(
        self,
        uri_template: str,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> Callable[[F], F]:
        """Register a reader for a URI template (decorator); ``{var}`` become arguments."""
        return _reader_decorator(
            self.add_resource_template, uri_template, name, title, description, mime_type
        )

    def add_resource_template(
        self,
        uri_template: str,
        reader: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> mt.ResourceTemplate:
        """Register a resource template; ``reader(**variables)`` serves matching reads."""
        template = mt.ResourceTemplate(
            uri_template=uri_template,
            name=name or uri_template,
            title=title,
            description=description,
            mime_type=mime_type,
        )
        self._templates.append(
            TemplateSpec(
                template,
                template_pattern(uri_template),
                reader,
                read_signature(reader) if reader is not None else None,
            )
        )
        return template

    @overload
    def prompt(self, fn: F, /) -> F: ...

    @overload
    def prompt(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
    ) -> Callable[[F], F]: ...

    def prompt(self, fn: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
        """Register a prompt (decorator); its parameters are the prompt's arguments.

        The overloads above spell out the options; they go to ``add_prompt`` unchanged.
        """
        return _decorate(fn, lambda func: self.add_prompt(func, **options))

    def add_prompt(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
    ) -> mt.Prompt:
        """Register ``fn`` as a prompt; it returns str, messages or a ``GetPromptResult``."""
        spec = build_prompt(fn, name=name, title=title, description=description)
        self._prompts[spec.prompt.name] = spec
        return spec.prompt

    def add_method(self, method: str, handler: MethodHandler) -> None:
        """Answer a custom JSON-RPC ``method`` with ``handler(params, ctx)`` (sync or async).

        It returns the result (dict or pydantic model) or raises ``RPCError``.
        """
        self._methods[method] = handler

    # -- inspection -------------------------------------------------------------------------

    def requests_for(
        self,
        method: str | None = None,
        *,
        tool: str | None = None,
        http_method: str | None = None,
        url: str | None = None,
    ) -> list[RecordedRequest]:
        """Recorded requests with this JSON-RPC method / tool / HTTP verb / endpoint."""
        return self.requests.for_method(method, tool=tool, http_method=http_method, url=url)

    @property
    def tool_calls(self) -> Counter[str]:
        """How many times each tool actually ran."""
        return Counter(e.name for e in self.tool_executions)

    def calls_to(self, tool: str) -> int:
        """How many times ``tool`` actually ran."""
        return sum(1 for e in self.tool_executions if e.name == tool)

    @property
    def sessions(self) -> dict[str, MockSession]:
        """Live sessions by id (a copy)."""
        return dict(self._sessions)

    @property
    def expired_sessions(self) -> dict[str, MockSession]:
        """Expired or deleted sessions by id (a copy)."""
        return dict(self._expired)

    def get_session(self, session_id: str) -> MockSession | None:
        """A session by id, live or expired (what a ``resume_session`` tool looks up)."""
        return self._sessions.get(session_id) or self._expired.get(session_id)

    # -- scripted state changes -------------------------------------------------------------

    def expire_session(self, session_id: str | None = None) -> list[str]:
        """Expire one session (or all): later requests carrying it get 404."""
        ids = [session_id] if session_id is not None else list(self._sessions)
        expired = []
        for sid in ids:
            session = self._sessions.pop(sid, None)
            if session is None:
                continue
            session.expired = True
            session._end_listen_streams()
            self._expired[sid] = session
            expired.append(sid)
            logger.debug("session %s expired", sid)
        return expired

    def take_down(self, url: str | None = None) -> None:
        """Make an endpoint (default: all) refuse every connection until ``bring_up``."""
        for endpoint in [normalize_url(url)] if url is not None else list(self._endpoints):
            if endpoint not in self._endpoints:
                raise ValueError(f"{url} is not an endpoint of this server")
            self._down.add(endpoint)

    def bring_up(self, url: str | None = None) -> None:
        """Undo ``take_down``."""
        if url is None:
            self._down.clear()
        else:
            self._down.discard(normalize_url(url))

    def is_down(self, url: str) -> bool:
        """Whether ``take_down`` took this endpoint down."""
        return normalize_url(url) in self._down

    def close_listen_streams(self, session_id: str | None = None) -> None:
        """End open GET streams gracefully (a client should reconnect).

        Stateless ``subscriptions/listen`` streams end too, with their final result.
        """
        for session in self._targets(session_id):
            if session.stateless:
                self._end_subscription(session)
            else:
                session._end_listen_streams()

    @property
    def subscriptions(self) -> list[MockSession]:
        """Open stateless ``subscriptions/listen`` streams (``listen_id``, ``listen_filter``)."""
        return list(self._subscriptions)

    def _end_subscription(self, session: MockSession) -> None:
        """The server tears a subscription down: the final result, then the stream ends."""
        meta = {_SUBSCRIPTION_ID: session.listen_id}
        result = self._stateless_envelope("subscriptions/listen", {"_meta": meta})
        session.events.append(session.listen, _result_response(session.listen_id, result))
        session._end_listen_streams()

    def close(self) -> None:
        """Refuse further connections and end open streams (fixture teardown)."""
        self._closed = True
        for session in [*self._sessions.values(), self._anonymous, *self._subscriptions]:
            session._end_listen_streams()

    # -- server-initiated messages (on GET listen streams) ----------------------------------

    def _targets(self, session_id: str | None) -> list[MockSession]:
        if not self.stateful:
            sessions = [self._anonymous]
        elif session_id is not None:
            session = self._sessions.get(session_id)
            if session is None:
                raise KeyError(f"no live session {session_id!r}")
            return [session]
        else:
            sessions = list(self._sessions.values())
        # Stateless listen streams get what they opted in to (see ``_push``).
        return [*sessions, *self._subscriptions] if session_id is None else sessions

    def notify(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
    ) -> int:
        """Queue a notification on the listen stream of one session (default: every live one).

        Messages wait for a GET stream if none is open. Returns how many sessions got it.
        """
        return self._push(jsonrpc_message(method, params), session_id)

    def _push(self, message: dict[str, Any], session_id: str | None) -> int:
        delivered = 0
        for session in self._targets(session_id):
            tagged = _for_subscription(session, message) if session.stateless else message
            if tagged is None:
                continue
            session.events.append(session.listen, tagged)
            session.waker.wake()
            delivered += 1
        return delivered

    def notify_tools_list_changed(self, *, session_id: str | None = None) -> int:
        return self.notify("notifications/tools/list_changed", session_id=session_id)

    def notify_resources_list_changed(self, *, session_id: str | None = None) -> int:
        return self.notify("notifications/resources/list_changed", session_id=session_id)

    def notify_prompts_list_changed(self, *, session_id: str | None = None) -> int:
        return self.notify("notifications/prompts/list_changed", session_id=session_id)

    def notify_resource_updated(self, uri: str, *, session_id: str | None = None) -> int:
        return self.notify("notifications/resources/updated", {"uri": uri}, session_id=session_id)

    def log(
        self,
        level: mt.LoggingLevel,
        data: Any,
        *,
        logger_name: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """Queue a ``notifications/message`` log entry on listen streams."""
        params = dump_model(
            mt.LoggingMessageNotificationParams(level=level, data=data, logger=logger_name)
        )
        return self.notify("notifications/message", params, session_id=session_id)

    def next_server_request_id(self) -> str:
        self._server_request_count += 1
        return f"mock-{self._server_request_count}"

    def send_request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
    ) -> list[str]:
        """Queue a server-to-client request on listen streams; returns the request ids.

        The client answers with a POST; find it in ``client_responses``.
        """
        ids = []
        for session in self._targets(session_id):
            if session.stateless:
                continue  # the stateless era has no server-to-client requests
            request_id = self.next_server_request_id()
            self._push(jsonrpc_message(method, params, request_id=request_id), session.id)
            ids.append(request_id)
        return ids

    def send_ping(self, *, session_id: str | None = None) -> list[str]:
        """Ping the client(s) over the listen stream; returns the request ids."""
        return self.send_request("ping", session_id=session_id)

    # -- serving ----------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An httpx transport serving this server, for clients that take one (no respx)."""
        return httpx.MockTransport(self.handle)

    def owns(self, url: httpx.URL) -> bool:
        """Whether requests to this URL's host belong to this server."""
        port = url.port or (443 if url.scheme == "https" else 80)
        return (url.scheme, f"{url.scheme}://{url.host}:{port}") in self._hosts

    def serves(self, url: httpx.URL) -> bool:
        """Whether this URL is one of the server's endpoints."""
        return normalize_url(url) in self._endpoints

    def start(self) -> MockMCPServer:
        """Intercept httpx traffic to this server's hosts with respx (until ``stop``)."""
        from ._network import MockNetwork

        if self._network is None:
            network = MockNetwork()
            network.add(self)
            network.start()
            self._network = network
        return self

    def stop(self) -> None:
        """Stop what ``start`` started."""
        if self._network is not None:
            self._network.stop()
            self._network = None

    def __enter__(self) -> MockMCPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one HTTP request as the server would (or raise the transport error)."""
        await request.aread()
        rec = self._record(request)
        try:
            response = await self._handle(rec, request)
        except Exception as error:
            logger.debug("%r: no answer (%s: %s)", rec, type(error).__name__, error)
            raise
        rec.status = response.status_code
        logger.debug("%r", rec)
        return response

    def _record(self, request: httpx.Request) -> RecordedRequest:
        content = request.content
        body: Any = None
        if content:
            try:
                body = json.loads(content)
            except ValueError:
                body = None
        endpoint = self._endpoints.get(normalize_url(request.url))
        rec = RecordedRequest(
            index=len(self.requests),
            http_method=request.method,
            url=str(request.url),
            endpoint=endpoint,
            headers=httpx.Headers(request.headers),
            content=content,
            body=body,
        )
        self.requests.append(rec)
        return rec

    async def _handle(self, rec: RecordedRequest, request: httpx.Request) -> httpx.Response:
        if rec.endpoint is None:
            return httpx.Response(404, text="Not Found")
        endpoint = normalize_url(rec.endpoint)
        if self._closed or endpoint in self._down:
            rec.faults.append("down")
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        for fault in self.faults.fire(rec, "connect"):
            assert isinstance(fault, ConnectErrorFault)
            raise fault.exception(request)

        delays = [f.seconds for f in self.faults.fire(rec, "delay") if isinstance(f, DelayFault)]
        delay = min(sum(delays), MAX_DELAY_SECONDS)
        if delay > 0:
            timeout = _read_timeout(request)
            if timeout is not None and timeout < delay:
                await anyio.sleep(timeout)
                await self._discard(rec, request)
                raise httpx.ReadTimeout("timed out waiting for the response", request=request)
            await anyio.sleep(delay)
        return await self._respond(rec, request)

    async def _discard(self, rec: RecordedRequest, request: httpx.Request) -> None:
        """Do the work of a request whose client gave up (a slow server still finishes)."""
        try:
            response = await self._respond(rec, request)
        except httpx.TransportError:
            return
        await response.aclose()

    async def _respond(self, rec: RecordedRequest, request: httpx.Request) -> httpx.Response:
        for fault in self.faults.fire(rec, "redirect"):
            assert isinstance(fault, RedirectFault)
            return httpx.Response(fault.status, headers={"location": fault.location})
        for fault in self.faults.fire(rec, "status"):
            assert isinstance(fault, StatusFault)
            return self._status_response(fault)
        denied = self._check_access(request)
        if denied is not None:
            return self._plain(denied)
        live = rec.session_id is not None and rec.session_id in self._sessions
        if live and self.faults.fire(rec, "expire"):
            assert rec.session_id is not None
            self.expire_session(rec.session_id)

        reply = await self._process(rec, request)

        for fault in self.faults.fire(rec, "lose"):
            assert isinstance(fault, LoseResponseFault)
            raise fault.exception(request)
        if isinstance(reply, _Plain):
            return self._plain(reply)
        if isinstance(reply, _Listen):
            stream_faults = self.faults.fire(rec, "stream")
            cut = stream_faults[0] if stream_faults else None
            return self._render_listen(
                request, reply, cut if isinstance(cut, CutStreamFault) else None
            )
        if reply.response is None:
            return httpx.Response(202)
        garbage = self.faults.fire(rec, "garbage")
        if garbage:
            assert isinstance(garbage[0], GarbageFault)
            return self._render_garbage(request, reply, garbage[0])
        stream = self.faults.fire(rec, "stream")
        stream_fault = stream[0] if stream else None
        assert stream_fault is None or isinstance(stream_fault, CutStreamFault | PollFault)
        mode = self.faults.fire(rec, "mode")
        if mode:
            assert isinstance(mode[0], RespondAsFault)
            reply.mode = mode[0].mode
        return self._render_answer(request, reply, stream_fault)

    def _check_access(self, request: httpx.Request) -> _Plain | None:
        origin = request.headers.get("origin")
        if self.allowed_origins is not None and origin not in (None, *self.allowed_origins):
            return _Plain(403, {"content-type": "text/plain"}, b"Forbidden: invalid Origin")
        authorization = request.headers.get("authorization")
        if self.auth_token is not None and authorization != f"Bearer {self.auth_token}":
            return _Plain(
                401,
                {"content-type": "text/plain", "www-authenticate": "Bearer"},
                b"Unauthorized",
            )
        return None

    # -- processing -------------------------------------------------------------------------

    async def _process(self, rec: RecordedRequest, request: httpx.Request) -> _Reply:
        if request.method == "POST":
            return await self._post(rec, request)
        version = rec.protocol_version
        stateless = version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS
        if stateless and self.stateless_versions:
            # The stateless era has only POST: GET and DELETE with its header get 405.
            return _Plain(405, {"allow": "POST"})
        if request.method == "GET":
            return self._get(rec, request)
        if request.method == "DELETE":
            return self._delete(rec)
        return self._not_allowed()

    def _not_allowed(self) -> _Plain:
        """405, listing the verbs this server's options leave open."""
        handshake = bool(self.handshake_versions)
        verbs = ["GET"] if self.get_stream and handshake else []
        verbs.append("POST")
        if self.allow_delete and self.stateful and handshake:
            verbs.append("DELETE")
        return _Plain(405, {"allow": ", ".join(verbs)})

    def _session_for(self, rec: RecordedRequest) -> MockSession | _Plain:
        if not self.stateful:
            return self._anonymous
        if rec.session_id is None:
            return _rpc_error(400, rec.id, -32600, "Bad Request: Missing session ID")
        session = self._sessions.get(rec.session_id)
        if session is None:
            return _rpc_error(404, rec.id, -32600, "Session not found")
        return session

    def _checked_session(self, rec: RecordedRequest) -> MockSession | _Plain:
        """The session of a POST or GET past ``initialize``, or the error that answers it.

        DELETE checks the session only: ending it works whatever version header it carries.
        """
        session = self._session_for(rec)
        if isinstance(session, _Plain):
            return session
        bad_version = self._check_version(rec)
        return bad_version if bad_version is not None else session

    def _check_version(self, rec: RecordedRequest) -> _Plain | None:
        version = rec.protocol_version
        if version is not None and version not in self.handshake_versions:
            supported = ", ".join(self.handshake_versions)
            return _rpc_error(
                400,
                rec.id,
                -32600,
                f"Bad Request: Unsupported protocol version: {version} (supported: {supported})",
            )
        return None

    async def _post(self, rec: RecordedRequest, request: httpx.Request) -> _Reply:
        if not {JSON, SSE} <= _media_types(request.headers.get("accept")):
            return _rpc_error(
                406,
                None,
                -32600,
                "Not Acceptable: Client must accept both application/json and text/event-stream",
            )
        if _media_types(request.headers.get("content-type")) != {JSON}:
            return _rpc_error(
                415, None, -32600, "Unsupported Media Type: Content-Type must be application/json"
            )
        body = rec.body
        if body is None:
            return _rpc_error(400, None, -32700, "Parse error")
        if isinstance(body, list):
            return _rpc_error(400, None, -32600, "Invalid Request: batches are not supported")
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or rec.kind == "invalid":
            return _rpc_error(400, rec.id, -32600, "Invalid Request")

        rec.era = self._era_of(rec)
        if rec.era == "stateless":
            return await self._stateless(rec)
        if not self.handshake_versions:
            return self._no_handshake(rec)
        if rec.kind == "request" and rec.method == "initialize":
            return self._initialize(rec)
        session = self._checked_session(rec)
        if isinstance(session, _Plain):
            return session

        if rec.kind == "notification":
            self._on_notification(session, rec)
            return _Answer(session, [], None, self.response_mode)
        if rec.kind == "response":
            session.client_responses[rec.id] = body
            self.client_responses[rec.id] = body
            return _Answer(session, [], None, self.response_mode)
        return await self._request(session, rec)

    def _era_of(self, rec: RecordedRequest) -> Era:
        """The era a POST is served in, decided as FastMCP and the official SDK decide it.

        A ``MCP-Protocol-Version`` header that is not a handshake version (2026-07-28, or an
        unknown one) goes stateless when this server serves that era; so does a request
        without the header whose ``_meta`` names a protocol version (it then fails the
        header check, which tells the client what it forgot). Everything else is handshake.
        """
        if not self.stateless_versions:
            return "handshake"
        header = rec.protocol_version
        if header is not None:
            return "handshake" if header in HANDSHAKE_PROTOCOL_VERSIONS else "stateless"
        meta = rec.meta
        if meta is not None and mt.PROTOCOL_VERSION_META_KEY in meta:
            return "stateless"
        return "handshake"

    def _no_handshake(self, rec: RecordedRequest) -> _Reply:
        """A stateless-only server's answer to handshake traffic: 400, -32022, what it speaks.

        The spec asks a modern-only server to name its versions in any error it returns to
        ``initialize``: a legacy client has no other way to tell its user what went wrong.
        """
        requested = rec.protocol_version
        if rec.method == "initialize":
            requested = rec.params.get("protocolVersion", requested)
        refusal = unsupported_version(requested, self.stateless_versions)
        message = (
            f"{refusal.message}: this server speaks only {', '.join(self.stateless_versions)}"
            " (no initialize handshake)"
        )
        error = {**refusal.to_error(), "message": message}
        body = _error_response(rec.id, error)
        return _Plain(400, {"content-type": JSON}, json.dumps(body).encode())

    async def _stateless(self, rec: RecordedRequest) -> _Reply:
        """One self-contained 2026-07-28 request: check the envelope, run it, no session."""
        if rec.kind == "notification":
            # No client notifications exist on this wire; accepted and dropped, as real servers do.
            return _Answer(None, [], None, self.response_mode)
        if rec.kind == "response":
            return _rpc_error(
                400, rec.id, -32600, "Invalid Request: stateless clients send no responses"
            )
        checked = check_envelope(rec.body, rec.headers, self.stateless_versions)
        if isinstance(checked, Refusal):
            return self._stateless_error(rec, checked.to_error())
        if rec.method == "tools/call":
            spec = self._tools.get(rec.params.get("name", ""))
            if spec is not None:
                schema = spec.tool.input_schema
                refusal = check_param_headers(schema, rec.arguments, rec.headers)
                if refusal is not None:
                    return self._stateless_error(rec, refusal.to_error())
        meta = rec.meta or {}
        session = MockSession(
            None,
            checked,
            endpoint=rec.endpoint,
            event_ids=False,
            client_info=_validated(mt.Implementation, meta.get(mt.CLIENT_INFO_META_KEY)),
            client_capabilities=_validated(
                mt.ClientCapabilities, meta.get(mt.CLIENT_CAPABILITIES_META_KEY)
            ),
            stateless=True,
        )
        session.initialized = True
        level = meta.get(mt.LOG_LEVEL_META_KEY)
        if level is not None:
            if level not in LOG_LEVELS:
                return self._stateless_error(
                    rec, {"code": INVALID_PARAMS, "message": f"Invalid log level: {level!r}"}
                )
            session.log_level = level
        if rec.method == "subscriptions/listen":
            return self._subscribe(session, rec)
        answer = await self._request(session, rec)
        error = answer.response.get("error") if answer.response is not None else None
        if isinstance(error, dict) and http_status_for(error.get("code", 0)) != 200:
            return self._stateless_error(rec, error)
        return answer

    def _subscribe(self, session: MockSession, rec: RecordedRequest) -> _Reply:
        """``subscriptions/listen``: acknowledge what is offered, then a stream that stays open."""
        wanted = rec.params.get("notifications")
        if not isinstance(wanted, dict):
            error = {"code": INVALID_PARAMS, "message": "params.notifications must be an object"}
            return self._stateless_error(rec, error)
        agreed = {k: v for k, v in wanted.items() if k in _LISTEN_KEYS_ALL and v}
        session.listen_id = rec.id
        session.listen_filter = agreed
        meta = {_SUBSCRIPTION_ID: rec.id}
        ack = jsonrpc_message(
            "notifications/subscriptions/acknowledged", {"notifications": agreed, "_meta": meta}
        )
        session.events.append(session.listen, ack)
        self._subscriptions.append(session)
        return _Listen(session, session.listen, 0, live=True)

    @staticmethod
    def _stateless_error(rec: RecordedRequest, error: dict[str, Any]) -> _Plain:
        """A stateless JSON-RPC error as JSON, with the HTTP status its code maps to."""
        body = _error_response(rec.id, error)
        status = http_status_for(int(error.get("code", 0)))
        return _Plain(status, {"content-type": JSON}, json.dumps(body).encode())

    def _default_session_id(self, n: int) -> str:
        # Deterministic (reproducible runs) yet distinct per server and per session.
        return hashlib.sha256(f"{self._seed}:{n}".encode()).hexdigest()[:32]

    def _initialize(self, rec: RecordedRequest) -> _Reply:
        try:
            params = mt.InitializeRequestParams.model_validate(rec.params)
        except ValidationError as error:
            response = _error_response(
                rec.id, {"code": -32602, "message": f"Invalid initialize params: {error}"}
            )
            return _Answer(None, [], response, "json")
        requested = params.protocol_version
        versions = self.handshake_versions
        negotiated = requested if requested in versions else versions[0]
        if self.stateful:
            self._session_count += 1
            session_id = self._session_ids(self._session_count)
            if not _visible_ascii(session_id):
                raise ValueError(f"session ids must be visible ASCII, got {session_id!r}")
            session = MockSession(
                session_id,
                negotiated,
                endpoint=rec.endpoint,
                event_ids=self.sse_event_ids,
                client_info=params.client_info,
                client_capabilities=params.capabilities,
            )
            self._sessions[session_id] = session
            logger.debug("session %s created (%s) at %s", session_id, negotiated, rec.endpoint)
        else:
            session = self._anonymous
            session.protocol_version = negotiated
            session.client_info = params.client_info
            session.client_capabilities = params.capabilities
        result = mt.InitializeResult(
            protocol_version=negotiated,
            capabilities=self.capabilities,
            server_info=mt.Implementation(name=self.name, version=self.version),
            instructions=self.instructions,
        )
        response = _result_response(rec.id, self._serialize("initialize", negotiated, result))
        return _Answer(session, [], response, self.response_mode, new_session=self.stateful)

    def _on_notification(self, session: MockSession, rec: RecordedRequest) -> None:
        if rec.method == "notifications/initialized":
            session.initialized = True
        elif rec.method == "notifications/cancelled":
            session.cancelled.append(rec.params.get("requestId"))

    def _serialize(
        self, method: str, version: str, result: BaseModel | Mapping[str, Any]
    ) -> dict[str, Any]:
        data = dump_model(result) if isinstance(result, BaseModel) else dict(result)
        if version in MODERN_PROTOCOL_VERSIONS:
            data = self._stateless_envelope(method, data)
        try:
            return serialize_server_result(method, version, data)
        except (KeyError, ValueError):  # custom methods, results outside the schema
            return data

    def _stateless_envelope(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        """What every 2026-07-28 result carries: ``resultType``, the server's identity, and
        for cacheable results ``ttlMs`` / ``cacheScope``."""
        meta = dict(data.get("_meta") or {})
        meta.setdefault(mt.SERVER_INFO_META_KEY, {"name": self.name, "version": self.version})
        data = {**data, "_meta": meta}
        data.setdefault("resultType", "complete")
        if method in CACHEABLE_METHODS:
            data.setdefault("ttlMs", self.cache_ttl_ms)
            data.setdefault("cacheScope", self.cache_scope)
        return data

    def _discover(self) -> mt.DiscoverResult:
        return mt.DiscoverResult(
            # Only the per-request versions, as FastMCP 4 and the official SDK list them.
            supported_versions=list(self.stateless_versions),
            capabilities=self.capabilities,
            instructions=self.instructions,
        )

    async def _request(self, session: MockSession, rec: RecordedRequest) -> _Answer:
        ctx = ToolContext(
            server=self, session=session, request=rec, request_id=rec.id, arguments=rec.arguments
        )
        method = rec.method or ""
        version = rec.protocol_version or session.protocol_version
        mode = self.response_mode
        try:
            if method == "tools/call":
                spec = self._tools.get(rec.params.get("name", ""))
                if spec is not None and spec.response_mode is not None:
                    mode = spec.response_mode
            result = await self._dispatch(method, rec.params, ctx)
            response = _result_response(rec.id, self._serialize(method, version, result))
        except RPCError as error:
            response = _error_response(rec.id, error.to_error())
        return _Answer(session, ctx.messages, response, mode)

    async def _dispatch(
        self, method: str, params: dict[str, Any], ctx: ToolContext
    ) -> BaseModel | Mapping[str, Any]:
        if method in self._methods:
            result = self._methods[method](params, ctx)
            if inspect.isawaitable(result):
                result = await result
            if result is None:
                return {}
            if not isinstance(result, BaseModel | Mapping):
                raise TypeError(f"handler for {method} returned {type(result).__name__}")
            return result
        if ctx.session.stateless:
            if method == "server/discover":
                return self._discover()
            if method in HANDSHAKE_ONLY_METHODS:
                raise RPCError(
                    METHOD_NOT_FOUND, f"Method not found: {method} (removed in 2026-07-28)"
                )
        if method == "ping":
            return {}
        if method == "tools/list":
            tools, cursor = self._page(self.tools, params)
            return mt.ListToolsResult(tools=tools, next_cursor=cursor)
        if method == "tools/call":
            return await self._call_tool(params, ctx)
        if method == "resources/list":
            resources, cursor = self._page([r.resource for r in self._resources.values()], params)
            return mt.ListResourcesResult(resources=resources, next_cursor=cursor)
        if method == "resources/templates/list":
            templates, cursor = self._page([t.template for t in self._templates], params)
            return mt.ListResourceTemplatesResult(resource_templates=templates, next_cursor=cursor)
        if method == "resources/read":
            return await self._read_resource(params, ctx)
        if method in ("resources/subscribe", "resources/unsubscribe"):
            uri = _uri_param(params)
            if method == "resources/subscribe":
                ctx.session.subscriptions.add(uri)
            else:
                ctx.session.subscriptions.discard(uri)
            return {}
        if method == "prompts/list":
            prompts, cursor = self._page([p.prompt for p in self._prompts.values()], params)
            return mt.ListPromptsResult(prompts=prompts, next_cursor=cursor)
        if method == "prompts/get":
            return await self._get_prompt(params, ctx)
        if method == "logging/setLevel":
            level = params.get("level")
            if level not in LOG_LEVELS:
                raise RPCError(-32602, f"Invalid log level: {level!r}")
            ctx.session.log_level = level
            return {}
        raise RPCError(-32601, f"Method not found: {method}")

    def _page(self, items: list[T], params: dict[str, Any]) -> tuple[list[T], str | None]:
        cursor = params.get("cursor")
        start = 0
        if cursor is not None:
            if not isinstance(cursor, str) or not cursor.isdigit():
                raise RPCError(-32602, f"Invalid cursor: {cursor!r}")
            start = int(cursor)
        if self.page_size is None:
            return items[start:], None
        end = start + self.page_size
        return items[start:end], (str(end) if end < len(items) else None)

    async def _call_tool(
        self, params: dict[str, Any], ctx: ToolContext
    ) -> mt.CallToolResult | dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RPCError(-32602, "Missing tool name")
        spec = self._tools.get(name)
        if spec is None:
            raise RPCError(-32602, f"Unknown tool: {name}")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise RPCError(-32602, "Tool arguments must be an object")
        try:
            kwargs = self._tool_kwargs(spec, arguments, ctx)
        except ValidationError as error:
            return error_result(validation_message(error))
        self.tool_executions.append(
            ToolExecution(name, arguments, ctx.session_id, ctx.request_id, ctx.endpoint)
        )
        try:
            value = await call_with(spec.fn, kwargs)
        except RPCError:
            raise
        except InputRequired as needed:
            return needed.to_result()
        except Exception as error:
            logger.debug("tool %s raised %r", name, error)
            return error_result(str(error) or type(error).__name__)
        return to_call_result(value)

    def _tool_kwargs(
        self, spec: ToolSpec, arguments: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        if spec.args_model is not None:
            model = spec.args_model.model_validate(arguments)
            kwargs = {p.name: getattr(model, p.name) for p in spec.signature.params}
            if spec.signature.var_kwargs and model.model_extra:
                kwargs.update(model.model_extra)
        else:
            kwargs = dict(arguments)
        if spec.signature.context_param is not None:
            kwargs[spec.signature.context_param] = ctx
        return kwargs

    async def _read_resource(
        self, params: dict[str, Any], ctx: ToolContext
    ) -> mt.ReadResourceResult:
        uri = _uri_param(params)
        spec = self._resources.get(uri)
        if spec is not None:
            kwargs = self._context_kwargs(spec.signature.context_param, ctx)
            value = await call_with(spec.read, kwargs)
            return to_read_result(uri, spec.resource.mime_type, value)
        for template in self._templates:
            match = template.pattern.match(uri)
            if match is None or template.read is None or template.signature is None:
                continue
            kwargs = {
                **match.groupdict(),
                **self._context_kwargs(template.signature.context_param, ctx),
            }
            value = await call_with(template.read, kwargs)
            return to_read_result(uri, template.template.mime_type, value)
        # 2026-07-28 moved "resource not found" from -32002 to Invalid Params.
        code = INVALID_PARAMS if ctx.session.stateless else -32002
        raise RPCError(code, "Resource not found", {"uri": uri})

    async def _get_prompt(self, params: dict[str, Any], ctx: ToolContext) -> mt.GetPromptResult:
        name = params.get("name")
        spec = self._prompts.get(name) if isinstance(name, str) else None
        if spec is None:
            raise RPCError(-32602, f"Unknown prompt: {name}")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise RPCError(-32602, "Prompt arguments must be an object")
        kwargs: dict[str, Any] = {}
        for param in spec.signature.params:
            if param.name in arguments:
                kwargs[param.name] = arguments[param.name]
            elif param.default is inspect.Parameter.empty:
                raise RPCError(-32602, f"Missing required argument: {param.name}")
        kwargs.update(self._context_kwargs(spec.signature.context_param, ctx))
        value = await call_with(spec.fn, kwargs)
        return to_prompt_result(value, spec.prompt.description)

    @staticmethod
    def _context_kwargs(param: str | None, ctx: ToolContext) -> dict[str, Any]:
        return {param: ctx} if param is not None else {}

    def _get(self, rec: RecordedRequest, request: httpx.Request) -> _Reply:
        if not (self.get_stream and self.handshake_versions):
            return self._not_allowed()
        if SSE not in _media_types(request.headers.get("accept")):
            return _rpc_error(
                406, None, -32600, "Not Acceptable: Client must accept text/event-stream"
            )
        session = self._checked_session(rec)
        if isinstance(session, _Plain):
            return session
        last_event_id = rec.last_event_id
        if last_event_id is not None:
            found = session.events.locate(last_event_id)
            if found is None:
                return _rpc_error(400, None, -32600, f"Unknown Last-Event-ID: {last_event_id}")
            log, position = found
        else:
            log, position = session.listen, session.listen.delivered
        live = log.kind == "listen"  # resuming the listen stream opens it again
        if live and self.single_listen_stream and session.listeners:
            return _rpc_error(409, None, -32600, "Conflict: a listen stream is already open")
        return _Listen(session, log, position, live=live)

    def _delete(self, rec: RecordedRequest) -> _Reply:
        if not (self.allow_delete and self.stateful and self.handshake_versions):
            return self._not_allowed()
        session = self._session_for(rec)
        if isinstance(session, _Plain):
            return session
        assert session.id is not None
        self.expire_session(session.id)
        return _Plain(200)

    # -- rendering --------------------------------------------------------------------------

    @staticmethod
    def _plain(reply: _Plain) -> httpx.Response:
        return httpx.Response(reply.status, headers=reply.headers, content=reply.content)

    @staticmethod
    def _status_response(fault: StatusFault) -> httpx.Response:
        headers = {"content-type": fault.content_type}
        if fault.retry_after is not None:
            value = fault.retry_after
            headers["retry-after"] = (
                str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            )
        headers.update(fault.headers or {})
        body = fault.body
        if body is None:
            body = f"{fault.status} {httpx.codes.get_reason_phrase(fault.status)}".strip()
        content = body.encode() if isinstance(body, str) else body
        return httpx.Response(fault.status, headers=headers, content=content)

    def _session_headers(self, answer: _Answer) -> dict[str, str]:
        if answer.new_session and answer.session is not None and answer.session.id is not None:
            return {"mcp-session-id": answer.session.id}
        return {}

    def _render_answer(
        self,
        request: httpx.Request,
        answer: _Answer,
        stream_fault: CutStreamFault | PollFault | None,
        *,
        force_sse: bool = False,
    ) -> httpx.Response:
        assert answer.response is not None
        headers = self._session_headers(answer)
        mode = answer.mode
        if mode == "auto":
            mode = "sse" if answer.messages else "json"
        if stream_fault is not None or force_sse:
            mode = "sse"
        if mode == "json":
            if answer.messages:
                logger.debug("JSON answer: dropped %d stream messages", len(answer.messages))
            headers["content-type"] = JSON
            return httpx.Response(
                200, headers=headers, content=json.dumps(answer.response).encode()
            )

        session = answer.session
        store = session.events if session is not None else EventStore(False)
        version = session.protocol_version if session is not None else self.protocol_versions[0]
        log = store.new_stream("request")
        stateless = session is not None and session.stateless
        # The stateless era has no resumption: no ids, no retry hint, no priming event.
        retry = None if stateless else self.sse_retry_ms
        cut: Cut | None = None
        if isinstance(stream_fault, PollFault):
            store.append(log, None, retry=stream_fault.retry_ms)
            cut = Cut(after_events=1, graceful=True)
            retry = None
        elif self.sse_priming and not stateless and is_version_at_least(version, "2025-11-25"):
            store.append(log, None, retry=retry)
            retry = None
        for message in [*answer.messages, answer.response]:
            store.append(log, message, retry=retry)
            retry = None
        if isinstance(stream_fault, CutStreamFault):
            cut = Cut(stream_fault.after_events, stream_fault.graceful, stream_fault.error)
            if not stream_fault.respond and stream_fault.after_events < len(log.events):
                # The rest of the answer is gone for good; the client still sees the cut.
                store.truncate(log, stream_fault.after_events)
                cut = Cut(len(log.events), stream_fault.graceful, stream_fault.error, at_end=True)
        return self._sse_response(headers, EventBody(request, log, 0, live=False, cut=cut))

    @staticmethod
    def _sse_response(headers: dict[str, str], body: EventBody) -> httpx.Response:
        return httpx.Response(200, headers=_sse_headers(headers), stream=body)

    def _render_listen(
        self, request: httpx.Request, listen: _Listen, fault: CutStreamFault | None
    ) -> httpx.Response:
        session = listen.session
        cut = Cut(fault.after_events, fault.graceful, fault.error) if fault is not None else None
        retry = None if session.stateless else self.sse_retry_ms
        prefix = f"retry: {retry}\n\n".encode() if retry is not None else b""
        if not listen.live:
            body = EventBody(request, listen.log, listen.start, live=False, cut=cut, prefix=prefix)
            return self._sse_response({}, body)
        generation = session.listen_generation
        session.listeners += 1

        def is_open() -> bool:
            return not self._closed and session.listen_generation == generation

        def on_close() -> None:
            session.listeners -= 1
            if session in self._subscriptions:
                self._subscriptions.remove(session)

        body = EventBody(
            request,
            listen.log,
            listen.start,
            live=True,
            waker=session.waker,
            is_open=is_open,
            cut=cut,
            on_close=on_close,
            prefix=prefix,
        )
        return self._sse_response({}, body)

    def _render_garbage(
        self, request: httpx.Request, answer: _Answer, fault: GarbageFault
    ) -> httpx.Response:
        response = answer.response
        assert response is not None
        headers = self._session_headers(answer)
        kind = fault.garbage
        json_headers = {**headers, "content-type": JSON}
        sse_headers = _sse_headers(headers)
        if kind == "bad_json":
            content = json.dumps(response).encode()
            return httpx.Response(200, headers=json_headers, content=content[: len(content) // 2])
        if kind == "not_jsonrpc":
            return httpx.Response(200, headers=json_headers, json={"ok": True})
        if kind == "wrong_id":
            request_id = response.get("id")
            other = request_id + 1000 if isinstance(request_id, int) else f"{request_id}-other"
            return httpx.Response(200, headers=json_headers, json={**response, "id": other})
        if kind == "empty_body":
            return httpx.Response(200, headers=json_headers)
        if kind == "wrong_content_type":
            html = b"<html><body><h1>Welcome</h1></body></html>"
            return httpx.Response(
                200, headers={**headers, "content-type": "text/html"}, content=html
            )
        if kind == "no_content_type":
            return httpx.Response(200, headers=headers, content=json.dumps(response).encode())
        if kind == "accepted":
            return httpx.Response(202, headers=headers)
        if kind == "sse_bad_json":
            event = b'event: message\ndata: {"jsonrpc": "2.0", "id": \n\n'
            return httpx.Response(200, headers=sse_headers, content=event)
        if kind == "sse_comments_only":
            return httpx.Response(
                200, headers=sse_headers, content=b": keep-alive\n\ndata:\n\n: bye\n\n"
            )
        if kind == "huge_event":
            big = {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": "x" * fault.size},
            }
            answer.messages = [big, *answer.messages]
            return self._render_answer(request, answer, None, force_sse=True)
        if kind == "bad_session_id":
            answered = self._render_answer(request, answer, None)
            answered.headers["mcp-session-id"] = "bad session id"
            return answered
        raise AssertionError(f"unhandled garbage kind {kind}")
