"""OpenTelemetry spans and metrics, following the OpenTelemetry MCP semantic conventions.

Two pieces, so the recovery logic carries no tracing code:

- ``traced`` wraps ``ResilientClient._request``: ONE client span per call (retries,
  failovers and resumes included), the ``mcp.client.operation.duration`` histogram, and
  the trace context injected into ``params._meta`` (``traceparent``/``tracestate``), so
  the server's span joins the caller's trace.
- ``record_event`` is one more hook receiving the client's ``Event`` values: a retry,
  failover or resume becomes an event on the span of the call it happened in, and the
  retry / failover / outcome-unknown counters go up.

``opentelemetry`` is imported on the first call, never by ``import mcp_resilient``. Without
it installed this is a no-op; with only the API installed (no SDK configured), spans are
non-recording and nothing is injected into ``_meta``, as with FastMCP's client.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from .errors import MCPError, ServerError

if TYPE_CHECKING:
    from ._client import ResilientClient
    from ._events import Event

__all__ = ["note_request_id", "record_event", "traced"]

logger = logging.getLogger("mcp_resilient")

INSTRUMENTATION = "mcp_resilient"
DURATION_METRIC = "mcp.client.operation.duration"
RETRIES_METRIC = "mcp_resilient.client.retries"
FAILOVERS_METRIC = "mcp_resilient.client.failovers"
OUTCOME_UNKNOWN_METRIC = "mcp_resilient.client.outcome_unknown"
#: Event kinds that become span events (the rest are about endpoints, not this call).
SPAN_EVENT_KINDS = frozenset(
    {
        "retry",
        "failover",
        "session_lost",
        "session_started",
        "session_resumed",
        "resume_failed",
        "stream_resumed",
        "outcome_unknown",
    }
)
# Boundaries for seconds-long MCP calls (the semantic conventions' advice).
_DURATION_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(slots=True)
class _Call:
    span: Any
    request_id: int | str | None = None
    endpoint: str | None = None  # where the last attempt went, when an event said so


_current: ContextVar[_Call | None] = ContextVar("mcp_resilient_call", default=None)


class _Otel:
    """The opentelemetry modules and our instruments, loaded once."""

    def __init__(self) -> None:
        from opentelemetry import metrics, propagate, trace

        self.trace = trace
        self.metrics = metrics
        self.propagate = propagate
        proxy_meters: Any = getattr(
            importlib.import_module("opentelemetry.metrics._internal"), "_ProxyMeterProvider", ()
        )
        self._idle_tracers = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._idle_meters = (metrics.NoOpMeterProvider, proxy_meters)
        meter = metrics.get_meter(INSTRUMENTATION)
        self.duration = meter.create_histogram(
            DURATION_METRIC,
            unit="s",
            description="Duration of an MCP request as seen by the client, retries included.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.retries = meter.create_counter(
            RETRIES_METRIC, unit="{retry}", description="Requests re-sent after a failure."
        )
        self.failovers = meter.create_counter(
            FAILOVERS_METRIC,
            unit="{failover}",
            description="Sessions moved to another endpoint after a failure.",
        )
        self.outcome_unknown = meter.create_counter(
            OUTCOME_UNKNOWN_METRIC,
            unit="{call}",
            description="Calls sent whose answer was lost and that were not safe to re-send.",
        )

    def active(self) -> bool:
        """Has an SDK been installed? Until then every span and sample is a no-op, and the
        API's no-op path still costs tens of microseconds a call: skip it."""
        return not isinstance(
            self.trace.get_tracer_provider(), self._idle_tracers
        ) or not isinstance(self.metrics.get_meter_provider(), self._idle_meters)


_otel: _Otel | None = None
_checked = False


_load_lock = threading.Lock()  # sync clients: several portal threads may make a first call


def _load() -> _Otel | None:
    """opentelemetry, imported on first use; None when it is not installed."""
    global _otel, _checked
    if not _checked:
        with _load_lock:
            if not _checked:
                if importlib.util.find_spec("opentelemetry") is not None:
                    try:
                        _otel = _Otel()
                    except Exception as exc:  # a broken or too old install: tracing off
                        logger.info("OpenTelemetry is installed but unusable: %s", exc)
                _checked = True
    return _otel


def _server(url: str | None) -> dict[str, Any]:
    if not url:
        return {}
    parts = urlsplit(url)
    attrs: dict[str, Any] = {}
    if parts.hostname:
        attrs["server.address"] = parts.hostname
    port = parts.port or (
        443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None
    )
    if port is not None:
        attrs["server.port"] = port
    return attrs


def _request_attributes(method: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The span name and the attributes known before the call (semantic conventions)."""
    attrs: dict[str, Any] = {"mcp.method.name": method}
    target: str | None = None
    if params:
        if method == "tools/call":
            target = str(params.get("name"))
            attrs["gen_ai.tool.name"] = target
            attrs["gen_ai.operation.name"] = "execute_tool"
        elif method == "prompts/get":
            target = str(params.get("name"))
            attrs["gen_ai.prompt.name"] = target
        elif method == "resources/read" and "uri" in params:
            attrs["mcp.resource.uri"] = str(params["uri"])
    name = f"{method} {target}" if target else method
    return name, attrs


def _connection_attributes(client: ResilientClient, endpoint: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"network.transport": "tcp", "network.protocol.name": "http"}
    attrs.update(_server(endpoint or client.endpoint))
    if client.protocol_version:
        attrs["mcp.protocol.version"] = client.protocol_version
    if client.session_id:  # handshake era only: the sessionless era has no session id
        attrs["mcp.session.id"] = client.session_id
    return attrs


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        return str(exc.code)  # the JSON-RPC error code, as the conventions ask
    return type(exc).__qualname__


def _inject(otel: _Otel, params: dict[str, Any] | None) -> dict[str, Any] | None:
    """Params with the current trace context in ``_meta`` (a copy; unchanged if none)."""
    carrier: dict[str, str] = {}
    otel.propagate.inject(carrier)
    if not carrier:
        return params
    new = dict(params or {})
    meta = dict(new.get("_meta") or {})
    for key, value in carrier.items():
        meta.setdefault(key, value)
    new["_meta"] = meta
    return new


def traced(request: F) -> F:
    """Wrap ``ResilientClient._request``: one span and one duration sample per call."""

    @functools.wraps(request)
    async def wrapper(
        client: ResilientClient,
        method: str,
        params: dict[str, Any] | None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        otel = _load()
        if otel is None or not otel.active():
            return await request(client, method, params, *args, **kwargs)
        name, attrs = _request_attributes(method, params)
        attrs.update(_connection_attributes(client))
        tracer = otel.trace.get_tracer(INSTRUMENTATION)
        started = time.perf_counter()
        error_type: str | None = None
        with tracer.start_as_current_span(
            name,
            kind=otel.trace.SpanKind.CLIENT,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            call = _Call(span)
            token = _current.set(call)
            try:
                result = await request(client, method, _inject(otel, params), *args, **kwargs)
                if getattr(result, "is_error", False) is True:
                    error_type = "tool_error"
                    span.set_status(otel.trace.StatusCode.ERROR, "the tool reported an error")
                return result
            except BaseException as exc:
                error_type = _error_type(exc)
                if isinstance(exc, MCPError) and exc.request_id is not None:
                    call.request_id = exc.request_id
                span.record_exception(exc)
                span.set_status(otel.trace.StatusCode.ERROR, str(exc)[:500])
                raise
            finally:
                _current.reset(token)
                after = _connection_attributes(client, call.endpoint)
                if call.request_id is not None:
                    after["jsonrpc.request.id"] = str(call.request_id)
                if error_type is not None:
                    after["error.type"] = error_type
                span.set_attributes(after)
                metric_attrs = {**attrs, **after}
                for key in ("mcp.session.id", "mcp.resource.uri", "jsonrpc.request.id"):
                    metric_attrs.pop(key, None)
                otel.duration.record(time.perf_counter() - started, metric_attrs)

    return cast(F, wrapper)


def note_request_id(request_id: int | str | None) -> None:
    """The JSON-RPC id of the current call's last attempt (told by the client)."""
    call = _current.get()
    if call is not None and request_id is not None:
        call.request_id = request_id


def _plain(value: Any) -> str | bool | int | float:
    return value if isinstance(value, str | bool | int | float) else str(value)


def record_event(event: Event) -> None:
    """The telemetry hook: an ``Event`` on the current call's span, and in the counters."""
    otel = _otel if _checked else None  # loaded by the first traced call, never here
    if otel is None:
        return
    attrs = _server(event.endpoint)
    if event.kind == "retry":
        otel.retries.add(1, {**attrs, "mcp.method.name": str(event.detail.get("method"))})
    elif event.kind == "failover":
        otel.failovers.add(1, attrs)
    elif event.kind == "outcome_unknown":
        otel.outcome_unknown.add(1, {**attrs, "mcp.method.name": str(event.detail.get("method"))})
    call = _current.get()
    if call is None or event.kind not in SPAN_EVENT_KINDS:
        return
    if event.kind in ("retry", "failover", "session_started") and event.endpoint:
        call.endpoint = event.endpoint  # the call moved there
    span_attrs: dict[str, Any] = {}
    if event.endpoint:
        span_attrs["mcp_resilient.endpoint"] = event.endpoint
    if event.session_id:
        span_attrs["mcp.session.id"] = event.session_id
    for key, value in event.detail.items():
        if value is not None:
            span_attrs[f"mcp_resilient.{key}"] = _plain(value)
    call.span.add_event(event.kind, span_attrs)
