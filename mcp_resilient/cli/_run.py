"""Running one ``mcp-call`` command: build the client, do the command, map failures to exit codes.

Exit codes are a contract with scripts, so the mapping from exceptions lives in one
place (``exit_code_for``) and errors become one line that says what failed, where, and
what to try.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import mcp_types

from mcp_resilient import (
    ConnectError,
    Event,
    HTTPStatusError,
    MCPError,
    OutcomeUnknownError,
    ProtocolError,
    RequestTimeoutError,
    ResilientClient,
    RetryPolicy,
    ServerError,
    TransportError,
    __version__,
)

from . import _format as fmt
from ._args import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_OUTCOME_UNKNOWN,
    EXIT_TOOL_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Options,
)
from ._login import run_login, stored_auth, unauthorized_hint
from ._output import Output
from ._trace import TraceLogHandler, TracingTransport

__all__ = ["exit_code_for", "explain", "run"]

_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602


@dataclass(slots=True)
class _State:
    """What happened so far: the phase (for exit codes) and the events seen."""

    phase: str = "connect"
    """``connect`` (opening the session), ``command``, or ``call`` (a tools/call went out)."""
    connect_seconds: float = 0.0
    events: list[Event] = field(default_factory=list)
    safe_call: bool = False
    """Whether the tool call may run twice (read-only, idempotent or ``--idempotent``)."""
    unauthorized: str | None = None
    """The hint for a 401, once probed (does the server use OAuth?)."""


class CommandFailed(Exception):
    """A command-level failure that is not an ``MCPError`` (e.g. no such tool in the list)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(exc: BaseException, *, phase: str, safe: bool = False) -> int:
    """The documented exit code for a failure, given when it happened.

    ``safe``: the tool call may run twice, so a lost answer (a timeout, a broken stream)
    leaves nothing in doubt: a plain failure (4), not "outcome unknown" (5).
    """
    if isinstance(exc, OutcomeUnknownError):
        # Also the library's "timed out and may have run" error, a RequestTimeoutError too.
        return EXIT_OUTCOME_UNKNOWN
    if isinstance(exc, CommandFailed):
        return exc.code
    if isinstance(exc, ConnectError):
        # Never sent: nothing ran, whatever the phase.
        return EXIT_UNREACHABLE
    if isinstance(exc, TransportError) and not isinstance(exc, HTTPStatusError | ProtocolError):
        if phase == "connect":
            return EXIT_UNREACHABLE
        if phase == "call" and not safe:
            # The call went out and its answer was lost (timeout, broken or ended stream).
            return EXIT_OUTCOME_UNKNOWN
    return EXIT_FAILED


_STATUS_HINTS = {
    401: "pass credentials with -H 'Authorization: Bearer TOKEN'",
    403: "the server refused the request: check the credentials (-H) and the URL",
    404: "check the URL (the MCP endpoint usually ends in /mcp)",
    406: "the server did not accept the request's Accept header: is this an MCP endpoint?",
    429: "the server is rate limiting: try again later",
    503: "the server is unavailable: try again later or give another URL for failover",
}


def _where(exc: MCPError) -> str:
    parts = []
    if exc.endpoint:
        parts.append(f"endpoint {exc.endpoint}")
    if exc.session_id:
        parts.append(f"session {exc.session_id}")
    return f" ({', '.join(parts)})" if parts else ""


def explain(
    exc: BaseException,
    *,
    phase: str,
    tool: str | None = None,
    safe: bool = False,
    unauthorized: str | None = None,
) -> str:
    """One line: what failed, where, and what to try (in CLI terms, not API terms).

    ``unauthorized`` replaces the 401 hint (the caller probed whether the server uses OAuth).
    """
    if isinstance(exc, CommandFailed):
        return str(exc)
    if not isinstance(exc, MCPError):
        return f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)"
    code = exit_code_for(exc, phase=phase, safe=safe)
    hint = exc.hint
    what = exc.message
    if isinstance(exc, ServerError):
        what = f"server error {exc.code}" + (f" on {exc.method}" if exc.method else "")
        what += f": {exc.message}"
        if exc.code == _METHOD_NOT_FOUND:
            hint = "the server does not implement this method ('mcp-call URL info' lists its capabilities)"
        elif exc.code == _INVALID_PARAMS:
            hint = "check the arguments ('mcp-call URL tools NAME' shows a tool's schema)"
    elif isinstance(exc, RequestTimeoutError):
        hint = "try a larger --timeout if the server is just slow"
    elif isinstance(exc, HTTPStatusError):
        hint = _STATUS_HINTS.get(exc.status_code, hint)
        if exc.status_code == 401 and unauthorized:
            hint = unauthorized
    if code == EXIT_UNREACHABLE and isinstance(exc, ConnectError):
        # The library wraps the last attempt's error; its own message is the clearer one.
        cause = exc.__cause__
        what = f"could not reach any endpoint: {cause.message if isinstance(cause, MCPError) else what}"
        hint = "check that the server is running and the URL is right (-v shows each attempt)"
    if code == EXIT_OUTCOME_UNKNOWN:
        what = f"outcome unknown{f' for tool {tool!r}' if tool else ''}: {what}"
        if isinstance(exc, OutcomeUnknownError):  # its message already says it may have run
            hint = (
                "check its effect before calling it again,"
                " or pass --idempotent if running it twice is harmless"
            )
        else:
            hint = "the tool may or may not have run; check its effect before calling it again"
    return f"{what}{_where(exc)}" + (f"; {hint[0].lower()}{hint[1:]}" if hint else "")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _main_failure(exc: BaseException) -> BaseException:
    """The failure to report from a (possibly grouped) exception: an MCP error if any."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, MCPError | CommandFailed):
            return leaf
    return leaves[0]


@contextlib.contextmanager
def _library_logging(out: Output) -> Iterator[None]:
    """Library log lines into the trace under -v; otherwise silent (events are shown instead)."""
    logger = logging.getLogger("mcp_resilient")
    saved = (logger.level, logger.propagate)
    handler: logging.Handler = TraceLogHandler(out) if out.verbose else logging.NullHandler()
    logger.addHandler(handler)
    logger.propagate = False
    if out.verbose:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _tracing_http_client(out: Output) -> httpx.AsyncClient:
    """Like the library's default client (no socket read timeout, no redirects), traced."""
    return httpx.AsyncClient(
        transport=TracingTransport(httpx.AsyncHTTPTransport(), out),
        timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=30.0),
        follow_redirects=False,
    )


DEFAULT_RETRIES = 2
# A failed endpoint stays out of the rotation for the rest of a (short) CLI run, so every
# URL gets its turn before any is tried again.
_DOWN_FOR = 30.0


def retry_policy(options: Options) -> RetryPolicy:
    """One attempt per URL plus ``--retries`` more; one failure takes an endpoint out."""
    retries = DEFAULT_RETRIES if options.retries is None else options.retries
    return RetryPolicy(
        max_attempts=len(options.urls) + retries,
        failure_threshold=1,
        down_interval=_DOWN_FOR,
        max_down_interval=_DOWN_FOR,
    )


def _client_kwargs(options: Options) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        # Servers see who is calling: mcp-call, not an anonymous SDK client.
        "client_info": mcp_types.Implementation(name="mcp-call", version=__version__),
        "headers": options.headers,
        # A one-shot command has no use for server-initiated messages outside its request.
        "listen": False,
        "retry": retry_policy(options),
    }
    if options.timeout is not None:
        kwargs["timeout"] = options.timeout
    if options.protocol_version is not None:
        kwargs["protocol_version"] = options.protocol_version
    if options.no_resume:
        kwargs["resume_tool"] = None
    if options.command != "login" and (auth := stored_auth(options)) is not None:
        kwargs["auth"] = auth  # the token of an earlier 'mcp-call URL login'
    return kwargs


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def run(options: Options, out: Output) -> int:
    """Connect, run ``options.command``, and return the exit code (errors reported on stderr)."""
    state = _State()

    async def on_event(event: Event) -> None:
        state.events.append(event)
        if out.verbose:
            out.trace(f"** event {event}")
        else:
            note = fmt.describe_event(event)
            if note is not None:
                out.note(note)

    async def on_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
        out.server_log(str(params.level), params.logger, params.data)

    with _library_logging(out):
        http = _tracing_http_client(out) if out.verbose else None
        try:
            try:
                kwargs = _client_kwargs(options)
                if options.command == "login":
                    return await run_login(options, out, kwargs)
                client = ResilientClient(
                    options.urls,
                    on_event=on_event,
                    log_handler=on_log,
                    http_client=http,
                    **kwargs,
                )
            except ValueError as exc:  # e.g. a --protocol-version this client does not speak
                out.error(f"{exc} (see 'mcp-call --help')")
                return EXIT_USAGE
            started = time.perf_counter()
            async with client:
                state.connect_seconds = time.perf_counter() - started
                _report_connect_failover(client, state, out)
                state.phase = "command"
                return await _COMMANDS[options.command](client, options, out, state)
        except Exception as exc:  # every failure becomes one line and an exit code
            failure = _main_failure(exc)
            out.finish()
            code = exit_code_for(failure, phase=state.phase, safe=state.safe_call)
            if isinstance(failure, HTTPStatusError) and failure.status_code == 401:
                state.unauthorized = await unauthorized_hint(options)
            if options.json and not out.has_document:
                out.document({"error": _error_document(failure, code, options, state)})
            out.error(
                explain(
                    failure,
                    phase=state.phase,
                    tool=options.name,
                    safe=state.safe_call,
                    unauthorized=state.unauthorized,
                )
            )
            out.traceback(exc)
            return code
        finally:
            out.finish()
            if http is not None:
                await http.aclose()


def _report_connect_failover(client: ResilientClient, state: _State, out: Output) -> None:
    """Say where the session landed when other URLs failed on the way (no event says it)."""
    # A retry event names where the retry goes; the endpoint that failed is `from_endpoint`.
    failed = [
        str(event.detail.get("from_endpoint") or event.endpoint)
        for event in state.events
        if event.kind == "retry"
        and (event.detail.get("from_endpoint") or event.endpoint) not in (None, client.endpoint)
    ]
    if not failed:
        return
    message = f"failover: {', '.join(dict.fromkeys(failed))} failed; connected to {client.endpoint}"
    if out.verbose:
        out.trace(f"** {message}")
    else:
        out.note(message)


def _error_document(
    exc: BaseException, code: int, options: Options, state: _State
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": explain(
            exc,
            phase=state.phase,
            tool=options.name,
            safe=state.safe_call,
            unauthorized=state.unauthorized,
        ),
        "exitCode": code,
    }
    if isinstance(exc, MCPError):
        doc["endpoint"] = exc.endpoint
        doc["sessionId"] = exc.session_id
    if isinstance(exc, ServerError):
        doc["code"] = exc.code
        doc["data"] = exc.data
    if isinstance(exc, HTTPStatusError):
        doc["status"] = exc.status_code
    return doc


# -- commands -----------------------------------------------------------------------


async def _info(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    started = time.perf_counter()
    await client.ping()
    round_trip = time.perf_counter() - started
    info: dict[str, Any] = {
        "serverInfo": fmt.dump(client.server_info) if client.server_info else None,
        "protocolVersion": client.protocol_version,
        "sessionId": client.session_id,
        "endpoint": client.endpoint,
        "endpoints": options.urls,
        "capabilities": fmt.dump(client.server_capabilities) if client.server_capabilities else {},
        "instructions": client.instructions,
        "connectMs": _ms(state.connect_seconds),
        "roundTripMs": _ms(round_trip),
    }
    if options.json:
        out.document(info)
    else:
        out.result(fmt.format_info(info))
    return EXIT_OK


def _offers(client: ResilientClient, capability: str) -> bool:
    capabilities = client.server_capabilities
    return capabilities is None or getattr(capabilities, capability, None) is not None


async def _tools(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    tools = await client.list_tools() if _offers(client, "tools") else []
    if options.name is not None:
        tool = next((t for t in tools if t.name == options.name), None)
        if tool is None:
            names = ", ".join(t.name for t in tools) or "none"
            raise CommandFailed(
                f"no tool named {options.name!r} on {client.endpoint} (tools: {names})"
            )
        if options.json:
            out.document(fmt.dump(tool))
        else:
            out.result(fmt.format_tool(tool))
        return EXIT_OK
    if options.json:
        out.document({"tools": [fmt.dump(t) for t in tools]})
    else:
        out.result(fmt.format_tools(tools, width=out.width()))
    return EXIT_OK


async def _call(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    assert options.name is not None

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        out.progress(progress, total, message)

    if _offers(client, "tools"):
        # The tool's annotations tell the library whether it may re-send the call after
        # an ambiguous failure (read-only or idempotent tools only, unless --idempotent).
        tools: list[mcp_types.Tool] | None = None
        with contextlib.suppress(ServerError):
            tools = await client.list_tools()
        if tools is not None:
            tool = next((t for t in tools if t.name == options.name), None)
            if tool is None:
                raise CommandFailed(_no_such_tool(options.name, tools, client.endpoint))
            state.safe_call = _safe_to_repeat(client, tool)
    state.safe_call = state.safe_call or options.idempotent
    state.phase = "call"
    failure: Exception | None = None
    async with anyio.create_task_group() as ticker:
        if out.stderr_is_tty() and not out.verbose:
            ticker.start_soon(_tick, out, options.name)
        try:
            result = await client.call_tool(
                options.name,
                options.arguments,
                progress_handler=on_progress,
                idempotent=True if options.idempotent else None,
            )
        except Exception as exc:  # re-raised below, not wrapped in an exception group
            failure = exc
        finally:
            ticker.cancel_scope.cancel()
    out.finish()
    if failure is not None:
        raise failure
    if options.json:
        out.document(fmt.dump(result))
    elif not result.is_error:
        out.result(fmt.format_call_result(result))
    if result.is_error:
        text = fmt.format_call_result(result).strip()
        head = f"tool {options.name!r} answered with isError (endpoint {client.endpoint})"
        if options.json or "\n" not in text:
            out.error(f"{head}: {text}")
        else:
            out.error(f"{head}:")
            out.block(text)
        return EXIT_TOOL_ERROR
    return EXIT_OK


def _no_such_tool(name: str, tools: list[mcp_types.Tool], endpoint: str | None) -> str:
    """The error for a tool the server did not list, with the closest names it did."""
    names = [t.name for t in tools]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if close:
        also = f"did you mean {', '.join(close)}?"
    else:
        also = f"it has {len(names)} tool{'s' if len(names) != 1 else ''}"
    return f"no such tool {name!r} on {endpoint}: {also} ('mcp-call URL tools' lists them)"


def _safe_to_repeat(client: ResilientClient, tool: mcp_types.Tool) -> bool:
    """Whether the listed annotations say the tool may run twice (as the library trusts them)."""
    hints = tool.annotations
    if hints is None or not client.trust_annotations:
        return False
    return bool(hints.read_only_hint or hints.idempotent_hint)


#: How often the elapsed time of a call is redrawn on a terminal.
TICK_INTERVAL = 1.0


async def _tick(out: Output, name: str) -> None:
    """Show the time a call has been waiting, on a terminal; ends when the call does."""
    started = time.perf_counter()
    while True:
        await anyio.sleep(TICK_INTERVAL)  # a display interval; cancelled with the call
        out.elapsed(name, time.perf_counter() - started)


async def _resources(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    resources: list[mcp_types.Resource] = []
    templates: list[mcp_types.ResourceTemplate] = []
    if _offers(client, "resources"):
        resources = await client.list_resources()
        try:
            templates = await client.list_resource_templates()
        except ServerError as exc:
            if exc.code != _METHOD_NOT_FOUND:
                raise
    if options.json:
        out.document(
            {
                "resources": [fmt.dump(r) for r in resources],
                "resourceTemplates": [fmt.dump(t) for t in templates],
            }
        )
    else:
        out.result(fmt.format_resources(resources, templates, width=out.width()))
    return EXIT_OK


async def _read(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    assert options.uri is not None
    result = await client.read_resource(options.uri)
    if options.json:
        out.document(fmt.dump(result))
        return EXIT_OK
    contents = result.contents
    if (
        len(contents) == 1
        and isinstance(contents[0], mcp_types.BlobResourceContents)
        and not out.stdout_is_tty()
    ):
        try:
            data = base64.b64decode(contents[0].blob, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                f"resource {options.uri} has a blob that is not valid base64",
                endpoint=client.endpoint,
                session_id=client.session_id,
            ) from None
        out.raw(data)
        return EXIT_OK
    out.result(fmt.format_read_result(result))
    return EXIT_OK


async def _prompts(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    prompts = await client.list_prompts() if _offers(client, "prompts") else []
    if options.json:
        out.document({"prompts": [fmt.dump(p) for p in prompts]})
    else:
        out.result(fmt.format_prompts(prompts, width=out.width()))
    return EXIT_OK


async def _prompt(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    assert options.name is not None
    result = await client.get_prompt(options.name, options.arguments)
    if options.json:
        out.document(fmt.dump(result))
    else:
        out.result(fmt.format_prompt_result(result))
    return EXIT_OK


async def _ping(client: ResilientClient, options: Options, out: Output, state: _State) -> int:
    started = time.perf_counter()
    await client.ping()
    round_trip = _ms(time.perf_counter() - started)
    if options.json:
        out.document(
            {"endpoint": client.endpoint, "sessionId": client.session_id, "roundTripMs": round_trip}
        )
    else:
        out.result(f"pong from {client.endpoint} in {round_trip:.1f} ms")
    return EXIT_OK


_COMMANDS = {
    "info": _info,
    "tools": _tools,
    "call": _call,
    "resources": _resources,
    "read": _read,
    "prompts": _prompts,
    "prompt": _prompt,
    "ping": _ping,
}
