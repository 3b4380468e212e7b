"""Tools, resources and prompts of the fake, defined from plain Python functions.

A tool is a function; its parameters become the input schema (through pydantic) and its
return value becomes a ``CallToolResult``. A parameter annotated ``ToolContext`` (or named
``ctx``) receives the context: session, shared state, progress and log notifications.
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import typing
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import mcp_types as mt
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ._faults import ResponseMode

if TYPE_CHECKING:
    from ._records import RecordedRequest
    from ._server import MockMCPServer, MockSession

__all__ = ["RPCError", "ToolContext"]

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

CONTENT_TYPES = (
    mt.TextContent,
    mt.ImageContent,
    mt.AudioContent,
    mt.ResourceLink,
    mt.EmbeddedResource,
)


class RPCError(Exception):
    """Raise from a tool, prompt, resource or method handler to answer a JSON-RPC error.

    Any other exception raised by a tool becomes a result with ``isError: true``.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class Emitted:
    """What ``ctx.progress()`` and friends return: awaiting it is optional.

    The message is queued at once, so the same tool code works sync or async.
    """

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_EMITTED = Emitted()


class ToolContext:
    """What a tool (or prompt, resource, custom method) knows about the call it serves.

    Messages it emits (progress, log, notifications, server-to-client requests) travel on
    this request's SSE stream, before the response. In JSON mode they are dropped, as real
    servers do, unless the server's ``response_mode`` is ``"auto"``.
    """

    def __init__(
        self,
        *,
        server: MockMCPServer,
        session: MockSession,
        request: RecordedRequest,
        request_id: Any,
        arguments: dict[str, Any],
    ) -> None:
        self.server = server
        self.session = session
        self.request = request
        self.request_id = request_id
        self.arguments = arguments
        self.messages: list[dict[str, Any]] = []
        meta = request.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        self.progress_token: str | int | None = (
            token if isinstance(token, str | int) and not isinstance(token, bool) else None
        )

    @property
    def session_id(self) -> str | None:
        """The session this call belongs to (None on a stateless server)."""
        return self.session.id

    @property
    def state(self) -> dict[str, Any]:
        """The backend state shared by every endpoint and session of the server."""
        return self.server.state

    @property
    def endpoint(self) -> str:
        """The endpoint URL (node) the request came in on."""
        return self.request.endpoint or self.request.url

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> Emitted:
        """Send a notification on this request's stream."""
        self.messages.append(jsonrpc_message(method, params))
        return _EMITTED

    def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> Emitted:
        """Report progress; a no-op when the request carried no ``progressToken``."""
        if self.progress_token is None:
            return _EMITTED
        params = mt.ProgressNotificationParams(
            progress_token=self.progress_token, progress=progress, total=total, message=message
        )
        return self.notify("notifications/progress", dump_model(params))

    def log(self, level: mt.LoggingLevel, data: Any, logger: str | None = None) -> Emitted:
        """Send a log message, unless the session's ``logging/setLevel`` filters it out."""
        if not self.session.wants_log(level):
            return _EMITTED
        params = mt.LoggingMessageNotificationParams(level=level, data=data, logger=logger)
        return self.notify("notifications/message", dump_model(params))

    def send_request(self, method: str, params: Mapping[str, Any] | None = None) -> str:
        """Send a server-to-client request on this stream; returns its id.

        The client's answer arrives later as a POST; find it in ``server.client_responses``.
        The stateless era (2026-07-28) has no server-to-client requests: it raises there.
        """
        if self.session.stateless:
            raise RuntimeError(
                f"{method}: a stateless (2026-07-28) request cannot carry server-to-client requests"
            )
        request_id = self.server.next_server_request_id()
        self.messages.append(jsonrpc_message(method, params, request_id=request_id))
        return request_id

    def ping_client(self) -> str:
        """Send a ``ping`` request to the client on this stream; returns its id."""
        return self.send_request("ping")

    @property
    def input_responses(self) -> dict[str, Any]:
        """Stateless era: the client's answers to an earlier ``input_required`` (by key)."""
        responses = self.request.params.get("inputResponses")
        return responses if isinstance(responses, dict) else {}

    @property
    def request_state(self) -> str | None:
        """Stateless era: the opaque ``requestState`` echoed back by the client, if any."""
        state = self.request.params.get("requestState")
        return state if isinstance(state, str) else None

    def input_required(
        self,
        requests: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        request_state: str | None = None,
    ) -> NoReturn:
        """Stateless era: answer ``input_required`` instead of a result (SEP-2322).

        ``requests`` maps keys to ``{"method": "elicitation/create" | "sampling/createMessage"
        | "roots/list", "params": {...}}``. The client answers them and sends the call again
        with ``inputResponses`` (``ctx.input_responses``) and ``request_state`` echoed
        (``ctx.request_state``); the tool runs again then. Tools only.
        """
        if not self.session.stateless:
            raise RuntimeError(
                "input_required exists only in the stateless era (2026-07-28);"
                " in the handshake era use ctx.send_request()"
            )
        raise InputRequired({k: dict(v) for k, v in (requests or {}).items()}, request_state)


class InputRequired(Exception):
    """Raised by ``ctx.input_required()``; the fake turns it into an ``input_required`` result."""

    def __init__(self, requests: dict[str, dict[str, Any]], request_state: str | None) -> None:
        super().__init__("input required")
        if not requests and request_state is None:
            raise ValueError("input_required needs input requests or a request_state")
        self.requests = requests
        self.request_state = request_state

    def to_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"resultType": "input_required"}
        if self.requests:
            result["inputRequests"] = self.requests
        if self.request_state is not None:
            result["requestState"] = self.request_state
        return result


def dump_model(model: BaseModel) -> dict[str, Any]:
    """A model as it goes on the wire: camelCase aliases, JSON values, unset fields left out."""
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def jsonrpc_message(
    method: str, params: Mapping[str, Any] | None = None, *, request_id: str | None = None
) -> dict[str, Any]:
    """A server-to-client notification, or a request when ``request_id`` is given.

    Shared by the per-request stream (``ToolContext``) and the listen stream (the server).
    """
    message: dict[str, Any] = {"jsonrpc": "2.0"}
    if request_id is not None:
        message["id"] = request_id
    message["method"] = method
    if params is not None:
        message["params"] = dict(params)
    return message


# -- signatures -------------------------------------------------------------------------------


@dataclass
class Signature:
    """The parts of a function's signature the fake cares about."""

    params: list[inspect.Parameter]
    hints: dict[str, Any]
    context_param: str | None
    var_kwargs: bool


def read_signature(fn: Callable[..., Any]) -> Signature:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to no annotations
        hints = {}
    params: list[inspect.Parameter] = []
    context_param: str | None = None
    var_kwargs = False
    for param in inspect.signature(fn).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_kwargs = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        hint = hints.get(param.name, param.annotation)
        is_context = hint is ToolContext or hint == "ToolContext"
        if is_context or (param.name == "ctx" and hint is inspect.Parameter.empty):
            context_param = param.name
            continue
        params.append(param)
    return Signature(params, hints, context_param, var_kwargs)


async def call_with(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call a sync or async function."""
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- tools ------------------------------------------------------------------------------------


@dataclass
class ToolSpec:
    name: str
    fn: Callable[..., Any]
    tool: mt.Tool
    signature: Signature
    args_model: type[BaseModel] | None
    response_mode: ResponseMode | None


def build_tool(
    fn: Callable[..., Any],
    *,
    name: str | None,
    title: str | None,
    description: str | None,
    annotations: mt.ToolAnnotations | Mapping[str, Any] | None,
    read_only: bool | None,
    destructive: bool | None,
    idempotent: bool | None,
    open_world: bool | None,
    input_schema: Mapping[str, Any] | None,
    output_schema: Mapping[str, Any] | None,
    response_mode: ResponseMode | None,
) -> ToolSpec:
    tool_name = name or fn.__name__
    signature = read_signature(fn)
    args_model: type[BaseModel] | None = None
    if input_schema is None:
        fields: dict[str, Any] = {}
        for param in signature.params:
            hint = signature.hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (hint, default)
        config = ConfigDict(extra="allow" if signature.var_kwargs else "ignore")
        args_model = create_model(f"{tool_name}_arguments", __config__=config, **fields)
        schema = args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            if isinstance(prop, dict):
                prop.pop("title", None)
    else:
        schema = dict(input_schema)

    if isinstance(annotations, Mapping):
        tool_annotations: mt.ToolAnnotations | None = mt.ToolAnnotations.model_validate(
            dict(annotations)
        )
    else:
        tool_annotations = annotations
    hints = {
        "read_only_hint": read_only,
        "destructive_hint": destructive,
        "idempotent_hint": idempotent,
        "open_world_hint": open_world,
    }
    if any(v is not None for v in hints.values()):
        base = tool_annotations.model_dump() if tool_annotations is not None else {}
        base.update({k: v for k, v in hints.items() if v is not None})
        tool_annotations = mt.ToolAnnotations.model_validate(base)

    doc = inspect.getdoc(fn)
    tool = mt.Tool(
        name=tool_name,
        title=title,
        description=description if description is not None else _first_paragraph(doc),
        input_schema=schema,
        output_schema=dict(output_schema) if output_schema is not None else None,
        annotations=tool_annotations,
    )
    return ToolSpec(tool_name, fn, tool, signature, args_model, response_mode)


def _first_paragraph(doc: str | None) -> str | None:
    if not doc:
        return None
    return doc.strip().split("\n\n", 1)[0].replace("\n", " ")


def validation_message(error: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in error.errors()
    ]
    return "Invalid arguments: " + "; ".join(parts)


def to_call_result(value: Any) -> mt.CallToolResult:
    """Turn what a tool returned into a ``CallToolResult``.

    str → text; content block(s) → content; dict or pydantic model → structured content
    (plus its JSON as text, for older clients); None → no content; anything else → JSON text.
    """
    if isinstance(value, mt.CallToolResult):
        return value
    if value is None:
        return mt.CallToolResult(content=[])
    if isinstance(value, str):
        return mt.CallToolResult(content=[mt.TextContent(text=value)])
    if isinstance(value, CONTENT_TYPES):
        return mt.CallToolResult(content=[value])
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        text = json.dumps(value, default=str)
        return mt.CallToolResult(content=[mt.TextContent(text=text)], structured_content=value)
    if isinstance(value, list | tuple) and all(isinstance(v, (str, *CONTENT_TYPES)) for v in value):
        blocks: list[mt.ContentBlock] = [
            mt.TextContent(text=v) if isinstance(v, str) else v for v in value
        ]
        return mt.CallToolResult(content=blocks)
    return mt.CallToolResult(content=[mt.TextContent(text=json.dumps(value, default=str))])


def error_result(message: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(text=message)], is_error=True)


# -- resources --------------------------------------------------------------------------------


@dataclass
class ResourceSpec:
    resource: mt.Resource
    read: Callable[..., Any]
    signature: Signature


@dataclass
class TemplateSpec:
    template: mt.ResourceTemplate
    pattern: re.Pattern[str]
    read: Callable[..., Any] | None
    signature: Signature | None


def template_pattern(uri_template: str) -> re.Pattern[str]:
    """A regex for a URI template: ``{name}`` matches one path segment, ``{+name}`` anything."""
    out: list[str] = []
    position = 0
    for match in re.finditer(r"\{(\+?)([A-Za-z_][A-Za-z0-9_]*)\}", uri_template):
        out.append(re.escape(uri_template[position : match.start()]))
        out.append(f"(?P<{match.group(2)}>{'.+' if match.group(1) else '[^/]+'})")
        position = match.end()
    out.append(re.escape(uri_template[position:]))
    return re.compile("".join(out) + r"\Z")


def to_read_result(uri: str, mime_type: str | None, value: Any) -> mt.ReadResourceResult:
    """str → text contents, bytes → blob contents, contents or a result as they are."""
    if isinstance(value, mt.ReadResourceResult):
        return value
    items = value if isinstance(value, list | tuple) else [value]
    contents: list[mt.TextResourceContents | mt.BlobResourceContents] = []
    for item in items:
        if isinstance(item, mt.TextResourceContents | mt.BlobResourceContents):
            contents.append(item)
        elif isinstance(item, bytes):
            blob = base64.b64encode(item).decode("ascii")
            contents.append(mt.BlobResourceContents(uri=uri, blob=blob, mime_type=mime_type))
        else:
            text = item if isinstance(item, str) else json.dumps(item, default=str)
            contents.append(mt.TextResourceContents(uri=uri, text=text, mime_type=mime_type))
    return mt.ReadResourceResult(contents=contents)


# -- prompts ----------------------------------------------------------------------------------


@dataclass
class PromptSpec:
    prompt: mt.Prompt
    fn: Callable[..., Any]
    signature: Signature


def build_prompt(
    fn: Callable[..., Any], *, name: str | None, title: str | None, description: str | None
) -> PromptSpec:
    signature = read_signature(fn)
    arguments = [
        mt.PromptArgument(name=p.name, required=p.default is inspect.Parameter.empty)
        for p in signature.params
    ]
    prompt = mt.Prompt(
        name=name or fn.__name__,
        title=title,
        description=description
        if description is not None
        else _first_paragraph(inspect.getdoc(fn)),
        arguments=arguments or None,
    )
    return PromptSpec(prompt, fn, signature)


def to_prompt_result(value: Any, description: str | None) -> mt.GetPromptResult:
    """str → one user message; messages (or strs) → those; a result as it is."""
    if isinstance(value, mt.GetPromptResult):
        return value
    items = value if isinstance(value, list | tuple) else [value]
    messages: list[mt.PromptMessage] = []
    for item in items:
        if isinstance(item, mt.PromptMessage):
            messages.append(item)
        else:
            text = item if isinstance(item, str) else json.dumps(item, default=str)
            messages.append(mt.PromptMessage(role="user", content=mt.TextContent(text=text)))
    return mt.GetPromptResult(description=description, messages=messages)
