"""``ResilientClient``: the public face of the SDK.

A small surface over private parts: the HTTP wire (``_transports``), the protocol
era (``_eras``) and the JSON-RPC session (``_session``). Results come back as the
protocol's own ``mcp_types`` models.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import httpx
import mcp_types
from pydantic import BaseModel, ValidationError

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
from ._session import Session
from ._sse import DEFAULT_MAX_EVENT_BYTES
from ._transports import HTTPWire
from .errors import ClientClosedError, ConnectError, MCPError, ProtocolError

__all__ = ["DEFAULT_TIMEOUT", "ResilientClient"]

logger = logging.getLogger("mcp_resilient")

DEFAULT_TIMEOUT = 60.0
"""Default deadline, in seconds, for each call (including the handshake)."""

_MAX_PAGES = 10_000
_VERSION = "0.1.0"

ModelT = TypeVar("ModelT", bound=BaseModel)


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

    Use it as an async context manager::

        async with ResilientClient("http://127.0.0.1:8000/mcp") as client:
            result = await client.call_tool("add", {"a": 1, "b": 2})

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
            self._stack = stack
            await self._connect()
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

    async def _connect(self) -> None:
        failures: list[MCPError] = []
        for url in self.endpoints:
            try:
                await self._open_session(url)
                return
            except ConnectError as exc:
                failures.append(exc)
                logger.info("could not connect to %s: %s", url, exc)
        raise ConnectError(
            f"no endpoint could be reached ({len(failures)} tried): "
            + "; ".join(str(f) for f in failures),
            endpoint=", ".join(self.endpoints),
            hint="Check that at least one server is running",
        )

    async def _open_session(self, url: str) -> None:
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
        self._init = await era.open(session, timeout=self.timeout)
        self._session = session
        await self._events.emit(
            "session_started",
            endpoint=url,
            session_id=era.session_id,
            protocol_version=era.protocol_version,
        )
        if self._listen:
            session.start_listening()

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
    ) -> ModelT:
        session = self._require_session()
        deadline = self.timeout if timeout == "default" else timeout
        raw = await session.request(
            method, params, timeout=deadline, progress_handler=progress_handler
        )
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
    ) -> mcp_types.CallToolResult:
        """Call a tool. A tool-level failure comes back with ``is_error=True``, not raised."""
        params: dict[str, Any] = {"name": name, "arguments": dict(arguments or {})}
        if meta:
            params["_meta"] = dict(meta)
        return await self._request(
            "tools/call",
            params,
            mcp_types.CallToolResult,
            timeout=timeout,
            progress_handler=progress_handler,
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

    def cached_tool(self, name: str) -> mcp_types.Tool | None:
        """The tool as last listed by ``list_tools`` (``None`` if not listed yet)."""
        return self._tools.get(name)
