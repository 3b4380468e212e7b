"""Callbacks a caller can plug in, and how server requests are answered.

The server may ask the client for things (sampling, elicitation, roots, ping) and
may tell it things (log messages, list changes). Each has an optional handler; a
request without a handler gets a proper JSON-RPC error, never silence.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import mcp_types
from pydantic import TypeAdapter, ValidationError

__all__ = [
    "ElicitationHandler",
    "ListChangedHandler",
    "LogHandler",
    "NotificationHandler",
    "ProgressHandler",
    "ResourceUpdatedHandler",
    "RootsProvider",
    "SamplingHandler",
    "ServerRequestError",
    "apply_schema_defaults",
]

logger = logging.getLogger("mcp_resilient")
server_logger = logging.getLogger("mcp_resilient.server")

ProgressHandler: TypeAlias = Callable[[float, float | None, str | None], Awaitable[None]]
"""``async def on_progress(progress, total, message)``: called for each progress notification."""

LogHandler: TypeAlias = Callable[[mcp_types.LoggingMessageNotificationParams], Awaitable[None]]
"""Receives ``notifications/message`` from the server. Default: the ``mcp_resilient.server`` logger."""

ListChangedHandler: TypeAlias = Callable[
    [Literal["tools", "resources", "prompts"]], Awaitable[None]
]
"""Told which list changed when the server sends ``notifications/*/list_changed``."""

ResourceUpdatedHandler: TypeAlias = Callable[[str], Awaitable[None]]
"""Told the URI of a subscribed resource when the server sends ``notifications/resources/updated``."""

NotificationHandler: TypeAlias = Callable[[str, dict[str, Any] | None], Awaitable[None]]
"""Receives every server notification (method and params), after the specific handlers."""

SamplingHandler: TypeAlias = Callable[
    [mcp_types.CreateMessageRequestParams],
    Awaitable[mcp_types.CreateMessageResult | mcp_types.CreateMessageResultWithTools],
]
"""Answers ``sampling/createMessage``: run the model the server asks for."""

ElicitationHandler: TypeAlias = Callable[
    [mcp_types.ElicitRequestParams], Awaitable[mcp_types.ElicitResult]
]
"""Answers ``elicitation/create``: ask the user. Accepted answers get the schema's defaults."""

RootsProvider: TypeAlias = (
    Sequence[mcp_types.Root] | Callable[[], Awaitable[Sequence[mcp_types.Root]]]
)
"""The client's roots: a fixed list or an async function returning one."""

_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}

_elicit_params: TypeAdapter[mcp_types.ElicitRequestParams] = TypeAdapter(
    mcp_types.ElicitRequestParams
)


class ServerRequestError(Exception):
    """Raised inside request handling to answer the server with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def apply_schema_defaults(schema: dict[str, Any], content: dict[str, Any] | None) -> dict[str, Any]:
    """Fill in the schema's ``default`` for every property the answer left out."""
    filled = dict(content or {})
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, prop in properties.items():
            if name not in filled and isinstance(prop, dict) and "default" in prop:
                filled[name] = prop["default"]
    return filled


async def default_log_handler(params: mcp_types.LoggingMessageNotificationParams) -> None:
    """Forward server log messages to the ``mcp_resilient.server`` logger."""
    level = _LOG_LEVELS.get(str(params.level), logging.INFO)
    source = f"[{params.logger}] " if params.logger else ""
    server_logger.log(level, "%s%s", source, params.data)


@dataclass(slots=True)
class Handlers:
    """The caller's callbacks, bundled so the session can dispatch to them."""

    log: LogHandler = default_log_handler
    list_changed: ListChangedHandler | None = None
    resource_updated: ResourceUpdatedHandler | None = None
    notification: NotificationHandler | None = None
    sampling: SamplingHandler | None = None
    elicitation: ElicitationHandler | None = None
    roots: RootsProvider | None = None

    def capabilities(self) -> dict[str, Any]:
        """Client capabilities: advertise only what a handler exists for."""
        caps: dict[str, Any] = {}
        if self.sampling is not None:
            caps["sampling"] = {}
        if self.elicitation is not None:
            caps["elicitation"] = {"form": {}}
        if self.roots is not None:
            caps["roots"] = {"listChanged": True}
        return caps

    async def answer(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """Answer one server request; raises ``ServerRequestError`` for a JSON-RPC error."""
        if method == "ping":
            return {}
        try:
            if method == "elicitation/create" and self.elicitation is not None:
                return await self._elicit(params or {})
            if method == "sampling/createMessage" and self.sampling is not None:
                sampled = await self.sampling(
                    mcp_types.CreateMessageRequestParams.model_validate(params or {})
                )
                return _dump(sampled)
            if method == "roots/list" and self.roots is not None:
                roots = self.roots
                listed = await roots() if callable(roots) else roots
                return _dump(mcp_types.ListRootsResult(roots=list(listed)))
        except ValidationError as exc:
            raise ServerRequestError(
                -32602, f"invalid params for {method}: {exc.error_count()} errors"
            ) from None
        raise ServerRequestError(-32601, f"client has no handler for {method!r}")

    async def _elicit(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.elicitation is not None
        parsed = _elicit_params.validate_python(params)
        result = await self.elicitation(parsed)
        if isinstance(result, dict):
            result = mcp_types.ElicitResult.model_validate(result)
        if result.action == "accept" and isinstance(parsed, mcp_types.ElicitRequestFormParams):
            result = result.model_copy(
                update={"content": apply_schema_defaults(parsed.requested_schema, result.content)}
            )
        return _dump(result)


def _dump(model: Any) -> dict[str, Any]:
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert isinstance(dumped, dict)
    return dumped


async def call_progress(handler: ProgressHandler, params: dict[str, Any]) -> None:
    """Call a progress handler with the notification's fields, tolerating sync handlers."""
    progress = params.get("progress", 0)
    total = params.get("total")
    outcome = handler(
        float(progress) if isinstance(progress, int | float) else 0.0,
        float(total) if isinstance(total, int | float) else None,
        params.get("message") if isinstance(params.get("message"), str) else None,
    )
    if inspect.isawaitable(outcome):
        await outcome
