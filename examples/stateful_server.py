"""A stateful FastMCP server to exercise a resilient client against real processes.

Run several instances on one machine and they behave like replicas of one service.
The replica machinery comes from the server kit (``mcp_resilient.server.add_resilience``):
per-session state in a shared store (Redis when ``REDIS_URL`` is set, else an SQLite
file), ``resume_session`` to carry a session's state across, the idempotency ledger
(a keyed call runs once however often it is re-sent), an event store so SSE events
carry ids, and ``/health``. This file holds only the example's own tools.

    python -m examples.stateful_server --host 127.0.0.1 --port 8001 --instance a

Environment:
    REDIS_URL        shared state (and event store) in Redis
    STATE_DB         SQLite file for shared state when Redis is not used
    STATE_PREFIX     Redis key prefix (isolates test runs sharing one Redis)
    MCP_RETRY_MS     SSE ``retry:`` hint in milliseconds (default 1000)
    MCP_EVENT_STORE  auto | memory | redis | none (default auto: redis if possible)
    MCP_JSON_RESPONSE  1 to answer requests with plain JSON instead of SSE
    MCP_INSTANCE     instance name when ``--instance`` is not given
    MCP_EXIT_WITH_PARENT  launcher PID; the server exits when that process is gone
    MCP_IDEMPOTENCY  0 to leave the ledger out (a plain server: no capability)
    MCP_LEDGER_LEASE seconds a running call's claim lives without renewal (default 3)
    MCP_TRANSACTIONAL 0 to make the state-changing tools plain (their writes go straight
                     to the store, as a call to another service would): what the tests
                     of a client's "outcome unknown" handling use
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import mcp_types
import uvicorn
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ResourceError, ToolError
from fastmcp.server.event_store import EventStore
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import Tool, ToolResult
from mcp.shared.message import ServerMessageMetadata
from mcp_types import ToolAnnotations
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from examples.state import COUNTER, ExampleState, store_from_env
from mcp_resilient.server import (
    Resilience,
    SessionState,
    Store,
    add_resilience,
    after_commit,
    transactional,
)

EventStoreMode = Literal["auto", "memory", "redis", "none"]
HoldPoint = Literal["start", "between", "end"]
LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]

MAX_STEPS = 1000
MAX_SLEEP_SECONDS = 600.0
MAX_DYNAMIC_TOOLS = 100
GATE_TIMEOUT = 120.0
GATE_POLL_INTERVAL = 0.02
_DYNAMIC_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

# Loopback on any port: tests reach instances directly and through a proxy on another
# port, and both must pass FastMCP's Host/Origin guard (a port-less host pattern
# matches any port; origins need the explicit ":*").
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "::1"]
ALLOWED_ORIGINS = [
    "http://127.0.0.1:*",
    "http://localhost:*",
    "http://[::1]:*",
    "http://127.0.0.1",
    "http://localhost",
]


@dataclass(frozen=True)
class ServerConfig:
    """Everything that varies between instances, read from the environment."""

    instance: str
    env: Mapping[str, str]
    retry_ms: int = 1000
    event_store: EventStoreMode = "auto"
    json_response: bool = False
    idempotency: bool = True
    ledger_lease: float = 3.0
    transactional: bool = True

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, instance: str | None = None
    ) -> ServerConfig:
        env = dict(os.environ) if env is None else dict(env)
        mode = env.get("MCP_EVENT_STORE", "auto").strip().lower() or "auto"
        if mode not in ("auto", "memory", "redis", "none"):
            raise ValueError(f"MCP_EVENT_STORE must be auto, memory, redis or none, not {mode!r}")
        return cls(
            instance=instance or env.get("MCP_INSTANCE") or f"instance-{os.getpid()}",
            env=env,
            retry_ms=int(env.get("MCP_RETRY_MS", "1000")),
            event_store=cast(EventStoreMode, mode),
            json_response=env.get("MCP_JSON_RESPONSE", "") in ("1", "true", "yes"),
            idempotency=env.get("MCP_IDEMPOTENCY", "1") not in ("0", "false", "no"),
            ledger_lease=float(env.get("MCP_LEDGER_LEASE", "3")),
            transactional=env.get("MCP_TRANSACTIONAL", "1") not in ("0", "false", "no"),
        )


class AddResult(BaseModel):
    """Structured output of ``add`` (so clients see ``structuredContent``)."""

    a: float
    b: float
    sum: float


def event_store_choice(config: ServerConfig) -> tuple[bool | EventStore, str]:
    """What to hand ``add_resilience(event_store=...)``, and its name for /health.

    ``auto`` lets the kit choose (Redis when the state is in Redis, else in memory).
    """
    redis = bool(config.env.get("REDIS_URL"))
    if config.event_store == "none":
        return False, "none"
    if config.event_store == "memory" or (config.event_store == "auto" and not redis):
        return EventStore(), "memory"
    if not redis:
        raise RuntimeError("MCP_EVENT_STORE=redis needs REDIS_URL")
    return True, "redis"


class ReplyGate(Middleware):
    """Holds a ``tools/call`` answer at the gate named by its ``reply_gate`` argument."""

    def __init__(self, wait_gate: Callable[[str], Awaitable[None]]) -> None:
        self.wait_gate = wait_gate

    async def on_call_tool(
        self,
        context: MiddlewareContext[mcp_types.CallToolRequestParams],
        call_next: CallNext[mcp_types.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        result = await call_next(context)
        gate = (context.message.arguments or {}).get("reply_gate")
        if isinstance(gate, str):
            await self.wait_gate(gate)
        return result


def _writes(*, idempotent: bool, destructive: bool) -> ToolAnnotations:
    """Annotations of a local tool that changes state (all four hints spelled out)."""
    return ToolAnnotations(
        read_only_hint=False,
        idempotent_hint=idempotent,
        destructive_hint=destructive,
        open_world_hint=False,
    )


def create_server(config: ServerConfig, store: Store) -> tuple[FastMCP, Resilience, str]:
    """The MCP server on the kit, with its own tools, a resource, a template and a prompt.

    Returns the server, what ``add_resilience`` set up, and the event store's name.
    """
    app_state = ExampleState(store)

    @asynccontextmanager
    async def lifespan(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await store.close()

    mcp = FastMCP(
        name="mcp-resilient-example",
        instructions="Stateful example server for mcp-resilient tests and demos.",
        lifespan=lifespan,
    )
    event_store, event_store_name = event_store_choice(config)

    async def wait_gate(name: str) -> None:
        """Wait until the gate is opened in the shared store; bounded by GATE_TIMEOUT."""
        await app_state.mark_waiting(name, config.instance)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_TIMEOUT
        while not await app_state.gate_is_open(name):
            if loop.time() >= deadline:
                raise ToolError(f"gate {name!r} was not opened within {GATE_TIMEOUT}s")
            await asyncio.sleep(GATE_POLL_INTERVAL)

    # Added before the kit, so it wraps the ledger: the answer is held after the ledger
    # recorded it (the window in which the demo kills the server).
    mcp.add_middleware(ReplyGate(wait_gate))

    async def carried_over(state: SessionState) -> dict[str, Any]:
        snapshot = await app_state.snapshot(state)
        return {"counter": snapshot.counter, "notes": snapshot.notes}

    kit = add_resilience(
        mcp,
        store,
        idempotency=config.idempotency,
        event_store=event_store,
        lease=config.ledger_lease,
        retry_interval=config.retry_ms,
        resume_summary=carried_over,
        health_info=lambda: {
            "instance": config.instance,
            "pid": os.getpid(),
            "state_backend": store.name,
            "event_store": event_store_name,
        },
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    # The state-changing tools commit their writes with their outcome (MCP_TRANSACTIONAL=0:
    # plain tools whose writes land at once, like calls to another service).
    tx: Callable[[Callable[..., Any]], Callable[..., Any]] = (
        transactional if config.transactional else (lambda fn: fn)
    )

    @mcp.tool(annotations=_writes(idempotent=False, destructive=False))
    @tx
    async def increment(
        ctx: Context,
        by: int = 1,
        call_id: str | None = None,
        gate: str | None = None,
        reply_gate: str | None = None,
        hold: str | None = None,
        hold_at: HoldPoint = "start",
    ) -> int:
        """Add `by` to this session's counter and return the new value.

        With `call_id`, the execution is counted (see `executions`). With `gate`, the
        answer waits, after the work is committed, until that gate is opened: a window
        in which a test can break the connection or kill the server. `reply_gate` waits
        later, once the idempotency ledger has recorded the answer. `hold` waits inside
        the run, before it commits: at the `start`, `between` the execution record and
        the counter, or at the `end`.
        """
        del reply_gate  # held by the ReplyGate middleware, outside the ledger

        async def pause(point: HoldPoint) -> None:
            if hold is not None and hold_at == point:
                await wait_gate(hold)

        state = kit.state(ctx)
        await pause("start")
        if call_id is not None:
            await app_state.record_execution(state, call_id)
        await pause("between")
        value = await state.incr(COUNTER, by)
        await pause("end")
        if gate is not None:
            if config.transactional:
                gate_name = gate

                async def hold_answer() -> None:
                    await wait_gate(gate_name)

                after_commit(hold_answer)
            else:
                await wait_gate(gate)
        return value

    @mcp.tool(annotations=read_only)
    async def executions(call_id: str) -> int:
        """How many times `increment` ran with this call id, on any instance."""
        return await app_state.executions(call_id)

    @mcp.tool(annotations=read_only)
    async def get_counter(ctx: Context) -> int:
        """This session's counter."""
        return await app_state.get_counter(kit.state(ctx))

    @mcp.tool(annotations=_writes(idempotent=True, destructive=True))
    @tx
    async def set_counter(ctx: Context, value: int) -> int:
        """Overwrite this session's counter; returns the value set."""
        await app_state.set_counter(kit.state(ctx), value)
        return value

    @mcp.tool(annotations=_writes(idempotent=False, destructive=False))
    @tx
    async def add_note(ctx: Context, text: str) -> int:
        """Append a note to this session; returns how many notes it has now."""
        return await app_state.add_note(kit.state(ctx), text)

    @mcp.tool(annotations=read_only)
    async def list_notes(ctx: Context) -> list[str]:
        """This session's notes, oldest first."""
        return await app_state.list_notes(kit.state(ctx))

    @mcp.tool(annotations=read_only)
    def add(a: float, b: float) -> AddResult:
        """Add two numbers (pure; structured output)."""
        return AddResult(a=a, b=b, sum=a + b)

    @mcp.tool(annotations=read_only)
    async def slow_progress(
        ctx: Context,
        steps: int = 5,
        delay: float = 0.0,
        close_stream_at: int | None = None,
        gate: str | None = None,
        gate_at: int | None = None,
    ) -> dict[str, Any]:
        """Send `steps` progress notifications, `delay` seconds apart, then answer.

        `close_stream_at=k` closes the SSE response after step k (server-side polling,
        2025-11-25+): the client must reconnect with Last-Event-ID to get the rest.
        `gate` pauses after step `gate_at` (default: `close_stream_at`, else 1) until the
        gate is opened, so a test can order the reconnection before the later events.
        """
        if not 0 <= steps <= MAX_STEPS:
            raise ToolError(f"steps must be between 0 and {MAX_STEPS}")
        pause_at = gate_at if gate_at is not None else (close_stream_at or 1)
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}/{steps}")
            if close_stream_at == step:
                await ctx.close_sse_stream()
            if gate is not None and pause_at == step:
                await wait_gate(gate)
            if delay > 0:
                await asyncio.sleep(min(delay, MAX_SLEEP_SECONDS))
        return {"steps": steps, "completed": True}

    @mcp.tool(annotations=_writes(idempotent=True, destructive=False))
    async def open_gate(name: str) -> str:
        """Open a gate that a paused `increment` or `slow_progress` waits on (any instance)."""
        await app_state.open_gate(name)
        return name

    @mcp.tool(annotations=read_only)
    async def log_something(ctx: Context, level: LogLevel, message: str) -> str:
        """Send one log notification (notifications/message) at `level`."""
        await ctx.log(message, level=level, logger_name="example")
        return message

    @mcp.tool(annotations=read_only)
    def fail(message: str = "requested failure") -> str:
        """Always fails with a tool error (a result with isError=true, not a protocol error)."""
        raise ToolError(message)

    @mcp.tool(annotations=read_only)
    async def ask_user(ctx: Context, question: str) -> dict[str, Any]:
        """Ask the user through elicitation; returns the action and the answer."""
        result = await ctx.elicit(question, response_type=str)
        answer = getattr(result, "data", None)
        return {"action": result.action, "answer": answer}

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    async def summarize(ctx: Context, text: str, max_tokens: int = 100) -> str:
        """Ask the client's model (sampling) to summarize `text`; returns its text."""
        request = mcp_types.CreateMessageRequest(
            params=mcp_types.CreateMessageRequestParams(
                messages=[
                    mcp_types.SamplingMessage(
                        role="user",
                        content=mcp_types.TextContent(type="text", text=f"Summarize:\n{text}"),
                    )
                ],
                max_tokens=max_tokens,
            )
        )
        # Sent through send_request with the tool call's request id so it rides that
        # call's SSE response (FastMCP 4.1 has no ctx.sample).
        result = await ctx.session.send_request(
            request,
            mcp_types.CreateMessageResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )
        content = result.content
        return content.text if isinstance(content, mcp_types.TextContent) else str(content)

    @mcp.tool(annotations=read_only)
    async def list_roots(ctx: Context) -> list[dict[str, Any]]:
        """Ask the client for its roots (roots/list) and return them."""
        # Same routing as summarize: on the call's own stream, not the GET stream.
        result = await ctx.session.send_request(
            mcp_types.ListRootsRequest(),
            mcp_types.ListRootsResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )
        return [{"uri": str(r.uri), "name": r.name} for r in result.roots]

    @mcp.tool(annotations=read_only)
    async def sleep(seconds: float) -> float:
        """Sleep, then return the seconds slept (for timeout and cancellation tests)."""
        seconds = max(0.0, min(seconds, MAX_SLEEP_SECONDS))
        await asyncio.sleep(seconds)
        return seconds

    @mcp.tool(annotations=read_only)
    async def whoami(ctx: Context) -> dict[str, Any]:
        """Which instance and process answered, and the session id it sees."""
        return {"instance": config.instance, "pid": os.getpid(), "session_id": ctx.session_id}

    dynamic_names: set[str] = set()

    @mcp.tool(annotations=_writes(idempotent=True, destructive=False))
    async def add_dynamic_tool(ctx: Context, name: str) -> str:
        """Register an echo tool `name` on this instance and send tools/list_changed."""
        if not _DYNAMIC_TOOL_NAME.match(name):
            raise ToolError("name must be a letter then up to 63 letters, digits or _")
        if name not in dynamic_names:
            if len(dynamic_names) >= MAX_DYNAMIC_TOOLS:
                raise ToolError(f"at most {MAX_DYNAMIC_TOOLS} dynamic tools")

            def echo(text: str = "") -> str:
                """Echo the text back (a dynamically added tool)."""
                return text

            mcp.add_tool(Tool.from_function(echo, name=name, annotations=read_only))
            dynamic_names.add(name)
        await ctx.send_notification(mcp_types.ToolListChangedNotification())
        return name

    @mcp.resource("state://counter", mime_type="application/json")
    async def counter_resource(ctx: Context) -> dict[str, Any]:
        """A read-only view of this session's counter."""
        return {
            "session_id": ctx.session_id,
            "counter": await app_state.get_counter(kit.state(ctx)),
        }

    @mcp.resource("notes://{index}", mime_type="text/plain")
    async def note_resource(index: int, ctx: Context) -> str:
        """One of this session's notes by position (0 is the oldest)."""
        notes = await app_state.list_notes(kit.state(ctx))
        if not 0 <= index < len(notes):
            raise ResourceError(f"no note at index {index}")
        return notes[index]

    @mcp.prompt
    def greet(name: str, style: str = "friendly") -> str:
        """A greeting prompt with arguments."""
        return f"Write a {style} greeting for {name}."

    return mcp, kit, event_store_name


def create_app(config: ServerConfig | None = None) -> Starlette:
    """The ASGI app (``/mcp``, ``/health``, ``/executions/{call_id}``) for one instance."""
    config = config or ServerConfig.from_env()
    store = store_from_env(dict(config.env))
    mcp, kit, _event_store_name = create_server(config, store)
    app_state = ExampleState(store)

    @mcp.custom_route("/executions/{call_id}", methods=["GET"])
    async def executions_route(request: Request) -> JSONResponse:
        """Execution count of a call id over plain HTTP (tests check at-most-once with it)."""
        call_id = request.path_params["call_id"]
        return JSONResponse({"call_id": call_id, "count": await app_state.executions(call_id)})

    @mcp.custom_route("/gates/{name}", methods=["GET"])
    async def gate_route(request: Request) -> JSONResponse:
        """Whether a gate is open, and which instance a call waits on it at (or null)."""
        name = request.path_params["name"]
        return JSONResponse(
            {
                "gate": name,
                "open": await app_state.gate_is_open(name),
                "waiting": await app_state.waiting_on(name),
            }
        )

    @mcp.custom_route("/gates/{name}", methods=["POST"])
    async def open_gate_route(request: Request) -> JSONResponse:
        """Open a gate over plain HTTP (no MCP session needed)."""
        name = request.path_params["name"]
        await app_state.open_gate(name)
        return JSONResponse({"gate": name, "open": True})

    return mcp.http_app(
        path="/mcp",
        transport="http",
        json_response=config.json_response,
        stateless_http=False,
        event_store=kit.event_store,
        retry_interval=config.retry_ms if kit.event_store is not None else None,
        host_origin_protection=True,
        allowed_hosts=ALLOWED_HOSTS,
        allowed_origins=ALLOWED_ORIGINS,
    )


def app_factory() -> Starlette:
    """For ``uvicorn --factory examples.stateful_server:app_factory`` (config from env)."""
    return create_app()


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """SIGTERM ourselves once the launcher is gone, so killed launchers leave no orphans.

    A daemon thread for the process's lifetime; re-parenting shows as a new ``getppid``.
    """

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            if os.getppid() != parent_pid:
                print("stateful_server: launcher is gone, shutting down", file=sys.stderr)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="Stateful example MCP server (Streamable HTTP).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--fd",
        type=int,
        default=None,
        help="serve on this inherited listening socket (launchers bind it: no port race)",
    )
    parser.add_argument("--instance", default=None, help="name reported by /health and whoami")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    sockets: list[socket.socket] | None = None
    host, port = args.host, args.port
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)  # family and type are read from the fd
        host, port = sock.getsockname()[:2]
        sockets = [sock]

    config = ServerConfig.from_env(instance=args.instance)
    app = create_app(config)
    parent = config.env.get("MCP_EXIT_WITH_PARENT", "")
    if parent.isdigit():
        exit_with_parent(int(parent))
    print(
        f"stateful_server: instance={config.instance} pid={os.getpid()} "
        f"url=http://{host}:{port}/mcp",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=args.log_level,
            timeout_graceful_shutdown=2,
            proxy_headers=False,
        )
    )
    server.run(sockets=sockets)


if __name__ == "__main__":
    main()
