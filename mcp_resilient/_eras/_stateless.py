"""The stateless era (2026-07-28): per-request ``_meta`` and headers, no session.

Every request says who the client is and which version it speaks, in ``params._meta``
and mirrored into headers that intermediaries route on. ``server/discover`` replaces
the handshake. There is no session id, no GET stream and no stream resumption: a lost
answer is a lost request, which the recovery layer re-issues with a new id only when
that is safe. Change notifications arrive on a ``subscriptions/listen`` answer stream.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types
from pydantic import ValidationError

from .._classify import STATE_ID_META_KEY
from .._events import EventSink
from .._exchange import Session
from .._handlers import Handlers
from .._headers import encode_header_value, tool_header_error, tool_param_headers
from .._transports import HTTPWire, StreamCursor
from ..errors import (
    HTTPStatusError,
    MCPError,
    ProtocolError,
    ServerError,
    SessionExpiredError,
    StreamEndedError,
    TransportError,
    UnsupportedProtocolVersionError,
)
from ._errors import (
    HEADER_MISMATCH,
    MISSING_CAPABILITY,
    UNSUPPORTED_VERSION,
    EraChangedError,
    HeaderMismatchError,
    OnEraChanged,
    error_of,
)

__all__ = [
    "STATELESS_VERSIONS",
    "LegacyServerError",
    "StatelessEra",
    "StatelessSession",
    "StatelessSettings",
    "fresh_until",
    "usable_tools",
]

logger = logging.getLogger("mcp_resilient")

STATELESS_VERSIONS: tuple[str, ...] = ("2026-07-28",)
"""Stateless-era versions this client speaks, newest first."""

_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
_NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

_LISTEN_MAX_IDLE = 5
"""``subscriptions/listen`` streams in a row that bring nothing before we stop reopening."""


class LegacyServerError(ProtocolError):
    """``server/discover`` got an answer no 2026-07-28 server gives: a handshake-era server."""


@dataclass(slots=True)
class StatelessSettings:
    """What every stateless request of one client carries; shared by all its endpoints."""

    versions: tuple[str, ...]
    client_info: mcp_types.Implementation
    capabilities: dict[str, Any]
    tool: Callable[[str], mcp_types.Tool | None] = lambda name: None
    wants_notifications: bool = False
    version: str | None = None
    log_level: str | None = None
    resource_subscriptions: list[str] = field(default_factory=list)
    """URIs whose ``notifications/resources/updated`` the listen stream asks for."""
    state_id: str | None = None
    """Sent as ``io.github.mcp-resilient/stateId`` on every request: the kit keys state on it."""
    server_capabilities: dict[str, Any] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    """One counter for the whole client: a request id is never used twice, on any endpoint."""


class StatelessEra:
    """Per-request metadata, ``server/discover``, and no session."""

    def __init__(
        self, settings: StatelessSettings, *, on_era_changed: OnEraChanged | None = None
    ) -> None:
        if not settings.versions:
            raise ValueError("StatelessEra needs at least one protocol version")
        self.settings = settings
        self.session_id: str | None = None
        self.protocol_version: str | None = settings.version or settings.versions[0]
        self.on_era_changed = on_era_changed
        self._opening = False
        # The same on every request: dumped once, not per request (hot path).
        self._client_info = settings.client_info.model_dump(by_alias=True, exclude_none=True)

    # -- every request ---------------------------------------------------------------

    def headers(self, method: str, params: dict[str, Any] | None = None) -> dict[str, str]:
        headers = {"MCP-Protocol-Version": self.protocol_version or "", "Mcp-Method": method}
        field_name = _NAMED_BY.get(method)
        value = params.get(field_name) if params is not None and field_name else None
        if isinstance(value, str):
            headers["Mcp-Name"] = encode_header_value(value)
        if method == "tools/call" and params is not None and isinstance(value, str):
            tool = self.settings.tool(value)
            arguments = params.get("arguments")
            if tool is not None and isinstance(arguments, dict):
                headers.update(tool_param_headers(tool.input_schema, arguments))
        return headers

    def prepare_params(self, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        prepared = dict(params or {})
        meta = dict(prepared.get("_meta") or {})
        meta[_PROTOCOL_VERSION] = self.protocol_version
        meta[_CLIENT_CAPABILITIES] = self.settings.capabilities
        meta[_CLIENT_INFO] = self._client_info
        if self.settings.log_level is not None:
            meta[_LOG_LEVEL] = self.settings.log_level
        if self.settings.state_id is not None:
            meta[STATE_ID_META_KEY] = self.settings.state_id
        prepared["_meta"] = meta
        return prepared

    def translate_error(self, exc: MCPError) -> MCPError:
        """Name the era's own errors; a handshake-style refusal means the server changed."""
        if self._opening or isinstance(exc, SessionExpiredError):
            return exc
        if isinstance(exc, HTTPStatusError):
            error = error_of(exc.body) or {}
        elif isinstance(exc, ServerError):
            error = {"code": exc.code, "message": exc.message, "data": exc.data}
        else:
            return exc
        code, message = error.get("code"), str(error.get("message", ""))
        where = {"endpoint": exc.endpoint}
        if code == HEADER_MISMATCH:
            return HeaderMismatchError(
                f"the server rejected the request's MCP headers (HeaderMismatch -32020): {message}",
                hint="A proxy may rewrite headers, or the tool's x-mcp-header schema changed"
                " (list_tools() refreshes it)",
                **where,
            )
        if code == MISSING_CAPABILITY:
            return ProtocolError(
                f"the server requires a client capability this client did not declare"
                f" (-32021): {message}",
                hint="Pass the matching handler (sampling_handler=, elicitation_handler=, roots=)",
                **where,
            )
        if code == UNSUPPORTED_VERSION:
            if self.on_era_changed is not None:
                return self._changed(
                    exc, f"no longer accepts protocol version {self.protocol_version}"
                )
            supported = _supported(error)
            return UnsupportedProtocolVersionError(
                supported[0] if supported else "none", self.settings.versions, **where
            )
        if (
            isinstance(exc, HTTPStatusError)
            and exc.status_code == 400
            and self.on_era_changed is not None
        ):
            return self._changed(exc, "answered like a handshake-era server (HTTP 400)")
        return exc

    def _changed(self, exc: MCPError, why: str) -> EraChangedError:
        endpoint = exc.endpoint or ""
        if self.on_era_changed is not None:
            self.on_era_changed(endpoint)
        return EraChangedError(
            exc.status_code if isinstance(exc, HTTPStatusError) else 400,
            f"the server {why}: negotiating again",
            endpoint=exc.endpoint,
            body=exc.body if isinstance(exc, HTTPStatusError) else None,
        )

    # -- opening -----------------------------------------------------------------------

    async def open(self, session: Session, *, timeout: float | None) -> mcp_types.InitializeResult:
        """``server/discover``; after -32022, once more with a version both sides speak."""
        self._opening = True
        try:
            for attempt in (1, 2):
                try:
                    raw = await session.request(
                        "server/discover", None, timeout=timeout, cancellable=False
                    )
                except (HTTPStatusError, ServerError) as exc:
                    version = self._answer_to_refusal(exc, session.endpoint, attempt)
                    if version is None:
                        # A modern server without server/discover (404, -32601): speak anyway.
                        return self._opened(None, session.endpoint)
                    self.protocol_version = version
                    continue
                except ProtocolError as exc:
                    raise LegacyServerError(
                        f"server/discover got no usable answer ({exc.message}):"
                        " not a 2026-07-28 server",
                        endpoint=session.endpoint,
                    ) from exc
                return self._opened(raw, session.endpoint)
        finally:
            self._opening = False
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer_to_refusal(self, exc: MCPError, endpoint: str, attempt: int) -> str | None:
        """The version to retry with, ``None`` to go on without discovery; or raise."""
        if isinstance(exc, HTTPStatusError):
            if exc.status_code >= 500 or exc.status_code == 429:
                raise exc  # the server did not judge the request: a transport failure
            error = error_of(exc.body)
            status = f"HTTP {exc.status_code}"
        else:
            assert isinstance(exc, ServerError)
            error = {"code": exc.code, "message": exc.message, "data": exc.data}
            status = "a JSON-RPC error"
        code = error.get("code") if error is not None else None
        message = str(error.get("message", "")) if error is not None else ""
        if code == UNSUPPORTED_VERSION:
            supported = _supported(error or {})
            mutual = [v for v in self.settings.versions if v in supported]
            if attempt == 1 and mutual:
                return mutual[0]
            raise UnsupportedProtocolVersionError(
                supported[0] if supported else "none", self.settings.versions, endpoint=endpoint
            ) from exc
        if code in (HEADER_MISMATCH, MISSING_CAPABILITY):
            raise ProtocolError(
                f"server/discover was refused ({code}): {message}", endpoint=endpoint
            ) from exc
        if isinstance(exc, HTTPStatusError) and exc.status_code == 404 and code == -32601:
            return None
        raise LegacyServerError(
            f"server/discover was answered with {status} and no 2026-07-28 error"
            f" ({message or 'no detail'}): a handshake-era server",
            endpoint=endpoint,
        ) from exc

    def _opened(self, raw: dict[str, Any] | None, endpoint: str) -> mcp_types.InitializeResult:
        """The discovery result as the client keeps it; ``None``: no discovery (404)."""
        supported = list(self.settings.versions) if raw is None else raw.get("supportedVersions")
        raw = raw or {}
        if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
            raise LegacyServerError(
                "server/discover answered without supportedVersions: a handshake-era server",
                endpoint=endpoint,
            )
        version = self.protocol_version
        assert version is not None
        meta = raw.get("_meta") if isinstance(raw.get("_meta"), dict) else {}
        info = (meta or {}).get(_SERVER_INFO) or raw.get("serverInfo")
        capabilities = raw.get("capabilities") if isinstance(raw.get("capabilities"), dict) else {}
        fields: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": info if isinstance(info, dict) else {"name": "", "version": ""},
        }
        if isinstance(raw.get("instructions"), str):
            fields["instructions"] = raw["instructions"]
        try:
            result = mcp_types.InitializeResult.model_validate(fields)
        except ValidationError as exc:
            raise ProtocolError(
                f"server sent an invalid server/discover result ({exc.error_count()} errors)",
                endpoint=endpoint,
            ) from None
        self.settings.version = version
        self.settings.server_capabilities = dict(capabilities or {})
        return result

    async def close(self, session: Session) -> None:
        """Nothing to end: the era has no session."""

    # -- notifications -------------------------------------------------------------------

    def listen_filter(self) -> dict[str, Any]:
        """The notifications to subscribe to: list changes the server offers, if asked for,
        and updates of the resources the caller subscribed to (``resourceSubscriptions``)."""
        wanted: dict[str, Any] = {}
        if self.settings.resource_subscriptions:
            wanted["resourceSubscriptions"] = list(self.settings.resource_subscriptions)
        if not self.settings.wants_notifications:
            return wanted
        for kind, key in (
            ("tools", "toolsListChanged"),
            ("prompts", "promptsListChanged"),
            ("resources", "resourcesListChanged"),
        ):
            offered = self.settings.server_capabilities.get(kind)
            if isinstance(offered, dict) and offered.get("listChanged"):
                wanted[key] = True
        return wanted


def _supported(error: dict[str, Any]) -> list[str]:
    data = error.get("data")
    supported = data.get("supported") if isinstance(data, dict) else None
    return [v for v in supported if isinstance(v, str)] if isinstance(supported, list) else []


class StatelessSession(Session):
    """The request machinery without what this era removed: resumption, cancel notices, GET."""

    era: StatelessEra

    def __init__(
        self,
        wire: HTTPWire,
        era: StatelessEra,
        handlers: Handlers,
        task_group: Any,
        events: EventSink,
    ) -> None:
        super().__init__(wire, era, handlers, task_group, events)
        self._ids = era.settings.ids
        self._listening = False
        self._listen_request: anyio.CancelScope | None = None
        self.acknowledged: dict[str, Any] = {}
        """What the server agreed to send on the last acknowledged listen stream."""
        self._acked = anyio.Event()

    def relisten(self) -> anyio.Event:
        """The set of notifications changed: reopen ``subscriptions/listen`` with the new one.

        A listen request's filter is fixed when it is sent, so the stream is replaced.
        Returns an event set when the server acknowledges the new stream (``acknowledged``).
        """
        self._acked = anyio.Event()
        if not self.closed:
            if not self._listening:
                self.start_listening()
            elif self._listen_request is not None:
                self._listen_request.cancel()
        return self._acked

    async def _on_notification(self, method: str, params: dict[str, Any] | None) -> None:
        if method == "notifications/subscriptions/acknowledged":
            agreed = (params or {}).get("notifications")
            self.acknowledged = agreed if isinstance(agreed, dict) else {}
            self._acked.set()
        await super()._on_notification(method, params)

    async def _resume(self, message: dict[str, Any], pending: Any, cursor: StreamCursor) -> None:
        # No Last-Event-ID in this era: the request is lost, and whether it may be sent
        # again (with a new id) is the recovery layer's decision.
        raise StreamEndedError(
            f"the answer stream of {message['method']} (id {message['id']}) ended without its"
            " response; streams cannot be resumed in protocol 2026-07-28",
            endpoint=self.endpoint,
        )

    def _cancel_in_background(self, rid: int | str, reason: str) -> None:
        # Closing the answer stream is the cancellation; there is no notice to send.
        return

    async def _listen(self, ready: anyio.Event) -> None:
        """Hold a ``subscriptions/listen`` stream open; its notifications go to the handlers."""
        ready.set()
        if self._listening or not self.era.listen_filter():
            return
        self._listening = True
        idle = 0
        try:
            with anyio.CancelScope() as scope:
                self._listen_scope = scope
                while not self.closed and idle < _LISTEN_MAX_IDLE:
                    outcome = await self._listen_once()
                    if outcome == "stop":
                        # Refused (or nothing left to ask for): whoever waits on an
                        # acknowledgement learns now that nothing was agreed.
                        self.acknowledged = {}
                        self._acked.set()
                        return
                    if outcome == "replaced":
                        idle = 0
                        continue  # `relisten`: reopen at once with the new filter
                    idle = 0 if outcome == "busy" else idle + 1
                    # Waiting to reopen; `relisten` cuts the wait short too.
                    with anyio.CancelScope() as self._listen_request:
                        await anyio.sleep(random.uniform(0, min(30.0, 0.5 * 2**idle)))
        finally:
            self._listening = False
            self._listen_request = None

    async def _listen_once(self) -> str:
        """One ``subscriptions/listen`` stream: ``"replaced"``, ``"busy"``, ``"idle"``, ``"stop"``."""
        wanted = self.era.listen_filter()
        if not wanted:
            return "stop"
        cursor = StreamCursor()
        with anyio.CancelScope() as request_scope:
            self._listen_request = request_scope
            try:
                await self.request(
                    "subscriptions/listen",
                    {"notifications": wanted},
                    timeout=None,
                    cursor=cursor,
                )
                logger.debug("%s ended the subscriptions/listen stream", self.endpoint)
            except (ServerError, UnsupportedProtocolVersionError, ProtocolError) as exc:
                logger.info("%s: no subscriptions/listen stream: %s", self.endpoint, exc)
                return "stop"
            except HTTPStatusError as exc:
                if exc.status_code < 500:
                    logger.info("%s: no subscriptions/listen stream: %s", self.endpoint, exc)
                    return "stop"
                logger.debug("subscriptions/listen on %s failed: %s", self.endpoint, exc)
            except TransportError as exc:
                logger.debug("subscriptions/listen on %s broke: %s", self.endpoint, exc)
        if request_scope.cancelled_caught:
            return "replaced"
        return "busy" if cursor.events > 1 else "idle"


def usable_tools(tools: list[mcp_types.Tool]) -> list[mcp_types.Tool]:
    """The tools whose ``x-mcp-header`` annotations are valid; the others are left out.

    The spec's rule for HTTP clients: one malformed tool must not hide the others, and an
    invalid one must not be offered (its headers could not be sent right).
    """
    kept: list[mcp_types.Tool] = []
    for tool in tools:
        problem = tool_header_error(tool.input_schema)
        if problem is None:
            kept.append(tool)
        else:
            logger.warning("leaving out tool %r from tools/list: %s", tool.name, problem)
    return kept


def fresh_until(pages: list[mcp_types.ListToolsResult], now: float) -> float:
    """Until when (``time.monotonic``) listed results may be used, from their ``ttlMs``."""
    ttls = [page.ttl_ms for page in pages if "ttl_ms" in page.model_fields_set]
    return now + min(ttls) / 1000 if ttls else float("inf")
