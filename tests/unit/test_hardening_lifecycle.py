"""Issue 9, lifecycle and deadlines: background failures, floods, opening and closing.

Each test pins one acceptance point of the hardening issue (the point number is in the
test's docstring). Most run on the respx fake of ``conftest.py``; the two that need real
connection-pool behaviour (a flood of server requests, the connection limit) run on a
tiny uvicorn server on 127.0.0.1 (``loopback.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import respx

from mcp_resilient import (
    ClientClosedError,
    Event,
    OutcomeUnknownError,
    ProtocolError,
    RequestTimeoutError,
    ResilientClient,
    RetryPolicy,
    _exchange,
)
from mcp_resilient.testing import MockMCPServer

from .conftest import URL, FakeServer, rpc_result, sse_event, sse_response
from .loopback import LoopbackMCP, serve

pytestmark = pytest.mark.anyio

LIMIT = 20
FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)


@dataclass
class Events:
    """``on_event`` callback that keeps everything the client reported."""

    items: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.items.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.items if e.kind == kind]

    async def wait_for(self, kind: str, timeout: float = 5) -> Event:
        with anyio.fail_after(timeout):
            while not self.of(kind):
                await anyio.sleep(0.01)
        return self.of(kind)[0]


async def wait_until(condition: Any, timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def hold_forever_sse(first: str | None = None) -> httpx.Response:
    """An SSE listen stream that sends ``first`` and then stays open."""

    async def chunks() -> AsyncIterator[bytes]:
        if first is not None:
            yield first.encode()
        await anyio.Event().wait()
        yield b""  # pragma: no cover

    return sse_response(chunks=chunks())


def raw_router(fake: FakeServer, side: Any) -> respx.MockRouter:
    """A respx router whose every request goes through ``side(request, fake)`` first."""
    router = respx.mock(assert_all_called=False)

    async def handler(request: httpx.Request) -> httpx.Response:
        got = await side(request, fake)
        return got if got is not None else await fake(request)

    router.route(url=URL).mock(side_effect=handler)
    return router


# -- point 1: a background failure never cancels the user's code ---------------------------


async def test_raw_error_on_the_listen_stream_does_not_cancel_user_code() -> None:
    """Point 1: a raw RecursionError inside the GET wire is logged and reported, not raised."""
    fake = FakeServer()
    events = Events()
    gets = 0

    async def side(request: httpx.Request, fake: FakeServer) -> httpx.Response | None:
        nonlocal gets
        if request.method == "GET":
            gets += 1
            if gets == 1:
                raise RecursionError("maximum recursion depth exceeded")
            return httpx.Response(405)
        return None

    with raw_router(fake, side), anyio.fail_after(LIMIT):
        async with ResilientClient(URL, on_event=events) as client:
            # The user's code waits inside `async with` while the background task fails.
            error = await events.wait_for("background_error")
            result = await client.call_tool("add", {"a": 2})
            assert result.structured_content == {"result": 2}
    assert "RecursionError" in error.detail["error"]


async def test_raw_error_in_the_cancel_notification_is_reported() -> None:
    """Point 1: the background ``notifications/cancelled`` POST fails with a raw error."""
    events = Events()
    started = anyio.Event()
    release = anyio.Event()

    fake = FakeServer()

    async def slow(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if body["params"]["name"] != "slow":
            return fake.default("tools/call", body)
        started.set()
        await release.wait()
        return rpc_result(body["id"], {"content": []})

    fake.on("tools/call", slow)

    async def side(request: httpx.Request, fake: FakeServer) -> httpx.Response | None:
        if request.method == "POST" and b"notifications/cancelled" in request.content:
            raise UnicodeEncodeError("ascii", "\u00e9", 0, 1, "ordinal not in range")
        return None

    with raw_router(fake, side), anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False, on_event=events) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.call_tool("slow"))
                await started.wait()
                tg.cancel_scope.cancel()
            error = await events.wait_for("background_error")
            release.set()
            assert (await client.call_tool("add", {"a": 1})).structured_content == {"result": 1}
    assert "UnicodeEncodeError" in error.detail["error"]


async def test_raw_error_replying_to_a_server_request_is_reported() -> None:
    """Point 1: the reply POST to a server ``ping`` raises a raw error (not httpx's)."""
    fake = FakeServer()
    events = Events()
    fake.get_answer = lambda request: hold_forever_sse(
        sse_event({"jsonrpc": "2.0", "id": 5, "method": "ping"}, id="g1")
    )

    async def side(request: httpx.Request, fake: FakeServer) -> httpx.Response | None:
        if request.method == "POST" and json.loads(request.content).get("id") == 5:
            raise RecursionError("maximum recursion depth exceeded")
        return None

    with raw_router(fake, side), anyio.fail_after(LIMIT):
        async with ResilientClient(URL, on_event=events) as client:
            error = await events.wait_for("background_error")
            assert (await client.call_tool("add", {"a": 3})).structured_content == {"result": 3}
    assert "RecursionError" in error.detail["error"]


async def test_a_listen_stream_that_keeps_failing_is_dropped_with_an_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Point 1: a raw error on every reconnect: the stream is given up, with ``listen_lost``."""
    monkeypatch.setattr(_exchange, "_LISTEN_MAX_IDLE_RECONNECTS", 2)  # keep the backoff short
    fake = FakeServer()
    events = Events()

    async def side(request: httpx.Request, fake: FakeServer) -> httpx.Response | None:
        if request.method == "GET":
            raise ValueError("broken GET")
        return None

    with raw_router(fake, side), anyio.fail_after(LIMIT):
        async with ResilientClient(URL, on_event=events) as client:
            lost = await events.wait_for("listen_lost", timeout=LIMIT)
            assert (await client.call_tool("add", {"a": 4})).structured_content == {"result": 4}
    assert lost.endpoint == URL
    assert len(events.of("background_error")) >= 1


# -- point 3: a flood of server requests ---------------------------------------------------


async def test_a_flood_of_server_pings_neither_freezes_the_loop_nor_starves_calls() -> None:
    """Point 3: 2,000 pings on the GET stream; replies are bounded, the excess shed."""
    app = LoopbackMCP()
    app.reply_delay = 0.2  # a server that takes its time over each reply
    flood = "".join(
        sse_event({"jsonrpc": "2.0", "id": f"p{i}", "method": "ping"}, id=f"e{i}")
        for i in range(2000)
    ).encode()

    async def listen() -> AsyncIterator[bytes]:
        yield flood
        await asyncio.sleep(30)

    app.listen = listen
    events = Events()
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    with serve(app):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            try:
                with anyio.fail_after(60):
                    async with ResilientClient(app.url, on_event=events) as client:
                        await events.wait_for("server_requests_shed", timeout=20)
                        started = time.monotonic()
                        result = await client.call_tool("anything", timeout=2)
                        elapsed = time.monotonic() - started
            finally:
                done.set()
    print(f"flood: call took {elapsed:.2f} s, max loop gap {max(gaps):.3f} s")
    assert result.content[0].text == "ok"  # type: ignore[union-attr]
    assert elapsed < 10
    assert max(gaps) < 1.0, f"event loop lagged {max(gaps):.2f} s"
    shed = events.of("server_requests_shed")
    assert shed and shed[0].detail["method"] == "ping"


# -- point 4: listing is capped in bytes ----------------------------------------------------


async def test_endless_large_pages_stop_at_a_byte_cap(server: FakeServer) -> None:
    """Point 4: endless cursors with ~3.5 MiB pages end in a ProtocolError, memory bounded."""
    blob = "x" * (3_500_000)
    pages = 0

    def page(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        nonlocal pages
        pages += 1
        if pages > 40:  # the unfixed client would go on until the deadline
            return httpx.Response(
                200,
                json={"jsonrpc": "2.0", "id": body["id"], "error": {"code": -1, "message": "x"}},
            )
        tool = {"name": f"t{pages}", "description": blob, "inputSchema": {"type": "object"}}
        return rpc_result(body["id"], {"tools": [tool], "nextCursor": f"c{pages}"})

    server.on("tools/list", page)
    tracemalloc.start()
    try:
        async with ResilientClient(URL, listen=False) as client:
            with pytest.raises(ProtocolError, match="bytes") as caught:
                await client.list_tools(timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"listing: {pages} pages, peak traced {peak / 2**20:.0f} MiB")
    assert "tools/list" in str(caught.value)
    assert pages <= 12
    assert peak < 200 * 1024 * 1024, f"peak traced memory {peak / 2**20:.0f} MiB"


# -- point 7: retry: 0 while resuming an answer ---------------------------------------------


async def test_retry_zero_while_resuming_an_answer_has_a_floor(server: FakeServer) -> None:
    """Point 7: every resumption GET says ``retry: 0`` and brings a new id, never the answer."""
    n = 0

    def primed(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return sse_response(sse_event(None, id="p0", retry=0))

    def on_get(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        return sse_response(sse_event(None, id=f"p{n}", retry=0))

    server.on("tools/call", primed)
    server.get_answer = on_get
    async with ResilientClient(URL, listen=False) as client:
        with anyio.fail_after(LIMIT), pytest.raises(RequestTimeoutError):
            await client.call_tool("add", {"a": 1}, timeout=1)
    gets = len(server.of_method("GET"))
    print(f"retry: 0 resumption: {gets} GETs in 1 s")
    assert 3 <= gets <= 20, f"{gets} GETs in one second"


# -- point 8: open and close from any task ----------------------------------------------------


@pytest.fixture
def listening(server: FakeServer) -> FakeServer:
    """The fake with a listen stream that stays open (a long-lived background task)."""
    server.get_answer = lambda request: hold_forever_sse(sse_event(None, id="l0"))
    return server


async def test_open_in_wait_for_then_close(listening: FakeServer) -> None:
    """Point 8: ``asyncio.wait_for(c.__aenter__(), 10)`` runs the open in its own task."""
    client = ResilientClient(URL)
    await asyncio.wait_for(client.__aenter__(), 10)
    assert (await client.call_tool("add", {"a": 1})).structured_content == {"result": 1}
    await asyncio.wait_for(client.aclose(), 10)
    assert listening.of_method("DELETE")


async def test_open_in_a_startup_task_close_in_a_shutdown_task(listening: FakeServer) -> None:
    """Point 8: app lifespans and fixtures open and close in different tasks."""
    client = ResilientClient(URL)
    await asyncio.create_task(client.__aenter__())
    assert (await client.call_tool("add", {"a": 2})).structured_content == {"result": 2}
    await asyncio.create_task(client.aclose())
    assert listening.of_method("DELETE")


async def test_open_inside_move_on_after(listening: FakeServer) -> None:
    """Point 8: the caller's cancel scope around ``__aenter__`` ends before the client."""
    client = ResilientClient(URL)
    with anyio.move_on_after(10):
        await client.__aenter__()
    assert (await client.call_tool("add", {"a": 3})).structured_content == {"result": 3}
    await client.aclose()


async def test_close_from_another_task_does_not_cancel_the_owner(listening: FakeServer) -> None:
    """Point 8: another task closes the client; the owner is not cancelled."""
    opened = anyio.Event()
    closed = anyio.Event()
    seen: list[str] = []

    async def owner(client: ResilientClient) -> None:
        async with client:
            opened.set()
            await closed.wait()  # must not be cancelled by the other task's close
            seen.append("owner went on")
            with pytest.raises(ClientClosedError):
                await client.call_tool("add", {"a": 1})

    client = ResilientClient(URL)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(owner, client)
            await opened.wait()
            await asyncio.create_task(client.aclose())
            closed.set()
    assert seen == ["owner went on"]


# -- point 9: the listen stream must not eat the open deadline -------------------------------


async def test_a_listen_stream_withholding_headers_does_not_fail_the_open(
    server: FakeServer,
) -> None:
    """Point 9: the GET never answers; an open with a 2 s deadline still succeeds quickly."""

    async def never(request: httpx.Request) -> httpx.Response:
        await anyio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    server.get_answer = never
    started = time.monotonic()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, timeout=2) as client:
            opened = time.monotonic() - started
            assert (await client.call_tool("add", {"a": 1})).structured_content == {"result": 1}
    assert opened < 1.5


async def test_a_failed_open_deletes_the_session_it_created() -> None:
    """Point 9: initialize answered, then the open timed out: the session is DELETEd."""
    fake = FakeServer()

    async def side(request: httpx.Request, fake: FakeServer) -> httpx.Response | None:
        if request.method == "POST" and b"notifications/initialized" in request.content:
            await anyio.Event().wait()
        return None

    with raw_router(fake, side), anyio.fail_after(LIMIT), pytest.raises(RequestTimeoutError):
        async with ResilientClient(URL, timeout=1):
            pass  # pragma: no cover
    (delete,) = fake.of_method("DELETE")
    assert delete.headers["mcp-session-id"] == fake.session_id


# -- point 10: closing with a call in flight ---------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "idempotent", "may_have_run"),
    [("add", None, False), ("order", False, True)],
)
async def test_closing_with_a_call_in_flight_raises_client_closed(
    server: FakeServer, tool: str, idempotent: bool | None, may_have_run: bool
) -> None:
    """Point 10: the in-flight call gets ClientClosedError, not httpx's RuntimeError."""
    started = anyio.Event()

    async def slow(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    server.on("tools/call", slow)
    outcome: list[BaseException] = []

    async def call(client: ResilientClient) -> None:
        try:
            await client.call_tool(tool, idempotent=idempotent)
        except Exception as exc:
            outcome.append(exc)

    with anyio.fail_after(LIMIT):
        client = ResilientClient(URL, listen=False)
        await client.__aenter__()
        await client.list_tools()  # "add" is listed read-only: safe to run again
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, client)
            await started.wait()
            await client.aclose()
    (exc,) = outcome
    assert isinstance(exc, ClientClosedError), repr(exc)
    assert ("may have run" in str(exc)) is may_have_run


async def test_reentering_a_closed_client_raises_client_closed(server: FakeServer) -> None:
    """Point 10: a closed client cannot be reopened (as httpx.AsyncClient), and says so."""
    client = ResilientClient(URL, listen=False)
    async with client:
        pass
    with pytest.raises(ClientClosedError, match="closed"):
        async with client:
            pass  # pragma: no cover


# -- point 11: every deadline is a RequestTimeoutError --------------------------------------


@pytest.mark.parametrize(
    ("lister", "method"),
    [
        ("list_tools", "tools/list"),
        ("list_prompts", "prompts/list"),
        ("list_resources", "resources/list"),
        ("list_resource_templates", "resources/templates/list"),
    ],
)
async def test_listing_deadlines_raise_request_timeout(
    server: FakeServer, lister: str, method: str
) -> None:
    """Point 11: a finite timeout on a list method raises RequestTimeoutError."""

    async def hang(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    server.on(method, hang)
    async with ResilientClient(URL, listen=False) as client:
        with anyio.fail_after(LIMIT), pytest.raises(RequestTimeoutError) as caught:
            await getattr(client, lister)(timeout=0.3)
    assert method in str(caught.value)


async def test_send_roots_list_changed_has_a_deadline() -> None:
    """Point 11: ``send_roots_list_changed(timeout=)`` is bounded like every call."""
    fake = FakeServer()

    async def side(request: httpx.Request, fake: FakeServer) -> httpx.Response | None:
        if request.method == "POST" and b"roots/list_changed" in request.content:
            await anyio.Event().wait()
        return None

    with raw_router(fake, side), anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False, roots=[]) as client:
            with pytest.raises(RequestTimeoutError):
                await client.send_roots_list_changed(timeout=0.3)


# -- point 12: a timed-out call that may have run ---------------------------------------------


async def test_a_timed_out_unsafe_call_is_outcome_unknown_and_a_timeout(
    server: FakeServer,
) -> None:
    """Point 12: sent, deadline passed, not safe to repeat: in doubt, and still a timeout."""

    async def hang(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    server.on("tools/call", hang)
    async with ResilientClient(URL, listen=False) as client:
        await client.list_tools()  # "add" is listed read-only, "place_order" not at all
        with anyio.fail_after(LIMIT), pytest.raises(OutcomeUnknownError) as caught:
            await client.call_tool("place_order", timeout=0.3)
        with anyio.fail_after(LIMIT), pytest.raises(RequestTimeoutError) as read_only:
            await client.call_tool("add", timeout=0.3)
    exc = caught.value
    assert isinstance(exc, RequestTimeoutError) and isinstance(exc, TimeoutError)
    assert "may have run" in str(exc)
    assert "larger timeout" not in str(exc)
    assert exc.tool == "place_order" and exc.request_id is not None
    # A read-only call is safe to repeat: a plain timeout, with the usual advice.
    assert not isinstance(read_only.value, OutcomeUnknownError)
    assert "larger timeout" in str(read_only.value)


# -- point 15: the retry event names where the retry goes ------------------------------------


async def test_retry_after_failover_names_the_new_endpoint(mcp_mock_cluster: Any) -> None:
    """Point 15: endpoint/session of the ``retry`` event are the ones the retry goes to."""
    cluster: MockMCPServer = mcp_mock_cluster(n=2)
    cluster.add_tool(lambda: "pong", name="check", read_only=True)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(cluster.urls, retry=FAST, on_event=events) as client:
            old_endpoint, old_session = client.endpoint, client.session_id
            cluster.take_down(old_endpoint)
            await client.call_tool("check")
            new_endpoint, new_session = client.endpoint, client.session_id
    assert new_endpoint != old_endpoint
    (retry,) = events.of("retry")
    assert (retry.endpoint, retry.session_id) == (new_endpoint, new_session)
    assert retry.detail["from_endpoint"] == old_endpoint
    assert retry.detail["from_session_id"] == old_session


# -- point 18: more than 100 calls at a time -------------------------------------------------


async def test_max_connections_lets_more_than_100_calls_run_at_once() -> None:
    """Point 18: 150 concurrent slow calls all reach the server together."""
    n = 150
    app = LoopbackMCP()

    async def slow(body: dict[str, Any]) -> dict[str, Any]:
        give_up = time.monotonic() + 5
        while app.max_in_flight < n and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        return {"content": [{"type": "text", "text": "ok"}]}

    app.on_call = slow
    with serve(app), anyio.fail_after(60):
        async with (
            ResilientClient(app.url, listen=False, max_connections=n + 10) as client,
            anyio.create_task_group() as tg,
        ):
            for _ in range(n):
                tg.start_soon(lambda: client.call_tool("slow", timeout=30))
    print(f"max_connections: {app.max_in_flight} calls at the server at once")
    assert app.max_in_flight == n


async def test_max_connections_cannot_be_combined_with_an_http_client() -> None:
    """Point 18: the limit belongs to the client's own pool; say so instead of ignoring it."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(ValueError, match="max_connections"):
            ResilientClient(URL, http_client=http, max_connections=500)
