"""Connection limits: many calls at once on the defaults, per endpoint, queued within deadlines.

Real loopback sockets (``loopback.py``): respx never shows a pool limit. Every test waits on
conditions (calls at the server), never on timings.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest

from mcp_resilient import OutcomeUnknownError, RequestTimeoutError, ResilientClient
from mcp_resilient._transports import EndpointSlots, default_connection_limit
from mcp_resilient._transports._limits import CURRENT_MARK, QueueMark, Slots, origin_of

from .loopback import LoopbackMCP, serve

pytestmark = pytest.mark.anyio


def test_default_limit_follows_the_descriptor_limit() -> None:
    # Half of what is left after a reserve, between 100 and 4096 requests per endpoint.
    assert default_connection_limit(1024) == 448
    assert default_connection_limit(20_000) == 4096
    assert default_connection_limit(256) == 100
    assert default_connection_limit(2_400) == 1136  # a thousand at once fit


def test_slots_are_per_origin() -> None:
    slots = EndpointSlots(3)
    a = slots.get("http://127.0.0.1:8000/mcp")
    assert a is slots.get("http://127.0.0.1:8000/other")  # one origin, one set of sockets
    assert a is not slots.get("http://127.0.0.1:8001/mcp")
    assert slots.get("https://Example.com/mcp") is slots.get("https://example.com:443/x")
    assert origin_of("http://[::1]:9/mcp") == "http://[::1]:9"
    assert EndpointSlots(None).get("http://127.0.0.1:8000/mcp") is None


async def test_a_cancelled_waiter_gives_its_turn_on_and_the_line_is_fifo() -> None:
    slots = Slots(1, "http://x:80")
    await slots.take()
    order: list[str] = []
    doomed = anyio.CancelScope()

    async def wait(name: str, scope: anyio.CancelScope | None = None) -> None:
        mark = QueueMark()
        CURRENT_MARK.set(mark)
        with scope or anyio.CancelScope():
            await slots.take()
            order.append(name)
            assert mark.queued_since is None and mark.queued_for > 0
            assert (mark.queue_limit, mark.queue_endpoint) == (1, "http://x:80")
            slots.give()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, "first", doomed)
        tg.start_soon(wait, "second")
        tg.start_soon(wait, "third")
        while len(slots._waiters) < 3:
            await asyncio.sleep(0)
        doomed.cancel()  # the first in line gives up before its turn
        while len(slots._waiters) > 2:
            await asyncio.sleep(0)
        slots.give()
    assert order == ["second", "third"]
    assert slots.used == 0 and not slots._waiters


async def _all_at_once(n: int, **options: Any) -> int:
    """``n`` concurrent calls; each waits at the server until all ``n`` are there (or 10 s)."""
    app = LoopbackMCP()

    async def slow(body: dict[str, Any]) -> dict[str, Any]:
        give_up = time.monotonic() + 10
        while app.max_in_flight < n and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        return {"content": [{"type": "text", "text": "ok"}]}

    app.on_call = slow
    with serve(app), anyio.fail_after(90):
        async with (
            ResilientClient(app.url, listen=False, **options) as client,
            anyio.create_task_group() as tg,
        ):
            for _ in range(n):
                tg.start_soon(lambda: client.call_tool("slow", timeout=60))
    return app.max_in_flight


@pytest.mark.usefixtures("socket_path")
async def test_defaults_run_hundreds_of_calls_at_once() -> None:
    """No settings: 300 slow calls all reach the server together (the old default: 100)."""
    assert await _all_at_once(300) == 300


def _held_server() -> tuple[LoopbackMCP, asyncio.Event, list[str]]:
    """A server whose tools/call answers wait for ``release`` (set on the server's loop);
    ``seen`` lists the tool names that reached it."""
    app = LoopbackMCP()
    release = asyncio.Event()
    seen: list[str] = []

    async def held(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body["params"]["name"])
        await asyncio.wait_for(release.wait(), 30)
        return {"content": [{"type": "text", "text": "ok"}]}

    app.on_call = held
    return app, release, seen


@pytest.mark.usefixtures("socket_path")
async def test_a_call_queued_past_its_deadline_says_so_and_was_never_sent() -> None:
    app, release, seen = _held_server()
    with serve(app), anyio.fail_after(60):
        async with (
            ResilientClient(
                app.url, listen=False, max_connections=1, protocol_version="2025-11-25"
            ) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(lambda: client.call_tool("first", idempotent=False))
            while not seen:
                await anyio.sleep(0.01)
            with pytest.raises(RequestTimeoutError) as info:
                await client.call_tool("second", timeout=0.3, idempotent=False)
            assert app.loop is not None
            app.loop.call_soon_threadsafe(release.set)
    error = info.value
    assert not isinstance(error, OutcomeUnknownError)  # queued, so it never ran
    assert "queued" in str(error) and "never sent" in str(error)
    assert "max_connections=1 per endpoint" in str(error)
    assert "max_connections" in (error.hint or "")
    assert seen == ["first"]


@pytest.mark.usefixtures("socket_path")
async def test_only_a_request_that_went_out_is_cancelled_on_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deadline that ends a call while it waits for a connection sends no
    ``notifications/cancelled``: the server never saw the request. One that ends a call
    the server is running does."""
    from mcp_resilient._exchange import Session

    cancels: list[tuple[int | str, str]] = []
    original = Session._cancel_in_background

    def spy(self: Session, rid: int | str, reason: str) -> None:
        cancels.append((rid, reason))
        original(self, rid, reason)

    monkeypatch.setattr(Session, "_cancel_in_background", spy)
    app, release, seen = _held_server()
    with serve(app), anyio.fail_after(60):
        async with (
            ResilientClient(
                app.url, listen=False, max_connections=1, protocol_version="2025-11-25"
            ) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(lambda: client.call_tool("first", idempotent=False))
            while not seen:
                await anyio.sleep(0.01)
            with pytest.raises(RequestTimeoutError, match="queued"):
                await client.call_tool("queued", timeout=0.3, idempotent=False)
            assert cancels == []  # never written: nothing to cancel
            assert app.loop is not None
            app.loop.call_soon_threadsafe(release.set)
        async with ResilientClient(app.url, listen=False, protocol_version="2025-11-25") as c:
            release.clear()
            with pytest.raises(OutcomeUnknownError):
                await c.call_tool("sent", timeout=0.3, idempotent=False)
            app.loop.call_soon_threadsafe(release.set)
    assert len(cancels) == 1  # the sent one only


class _Ports(LoopbackMCP):
    """Also records the client port of every MCP POST: one port, one TCP connection."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.ports.append(scope["client"][1])
        await super().__call__(scope, receive, send)


@pytest.mark.usefixtures("socket_path")
async def test_sequential_calls_reuse_one_connection() -> None:
    app = _Ports()
    with serve(app), anyio.fail_after(60):
        async with ResilientClient(app.url, listen=False, protocol_version="2025-11-25") as c:
            for _ in range(5):
                await c.call_tool("x")
    assert len(app.ports) >= 7  # initialize, initialized, five calls
    assert len(set(app.ports[-5:])) == 1, app.ports  # keep-alive: the calls share one
