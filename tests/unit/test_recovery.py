"""Retry, failure classes, session recovery and failover of ``ResilientClient``.

Every test runs the real client against ``mcp_resilient.testing``'s fake server and checks
the outcome on the wire (the fake's recorded requests and tool runs) and in the client's
events and counters. Policies use tiny backoffs; every test is bounded by ``fail_after``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as mt
import pytest

from mcp_resilient import (
    Event,
    HTTPStatusError,
    OutcomeUnknownError,
    RequestTimeoutError,
    ResilientClient,
    ResumeFailedError,
    RetryBudget,
    RetryPolicy,
    ServerError,
    SessionExpiredError,
    TransportError,
)
from mcp_resilient.testing import (
    MockClusterFactory,
    MockMCPServer,
    RecordedRequest,
    RPCError,
    ToolContext,
)

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)
"""Tiny waits; endpoints never stay down long; no throttling."""

STEADY = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, budget=None, failure_threshold=100)
"""Tiny waits and an endpoint that is never marked down (plain retries on one session)."""

LIMIT = 10
"""Outer bound (seconds) on every test: generous, never reached when the client is right."""

MISSING = "<missing>"


@dataclass
class Events:
    """``on_event`` callback that keeps everything the client reported."""

    items: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.items.append(event)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.items]

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.items if e.kind == kind]

    def index(self, kind: str, nth: int = 0) -> int:
        return [i for i, e in enumerate(self.items) if e.kind == kind][nth]

    async def wait_for(
        self, kind: str, where: Callable[[Event], bool] = lambda e: True, timeout: float = 5
    ) -> Event:
        with anyio.fail_after(timeout):
            while True:
                for event in self.of(kind):
                    if where(event):
                        return event
                await anyio.sleep(0.005)


async def wait_until(condition: Callable[[], bool], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.002)


def text(result: mt.CallToolResult) -> str:
    (block,) = result.content
    assert isinstance(block, mt.TextContent)
    return block.text


def define_tools(server: MockMCPServer) -> None:
    """Tools of every safety class, plus per-session state and a resume tool."""

    @server.tool(read_only=True)
    def search(query: str) -> str:
        """Read only: safe to re-send."""
        return f"results for {query}"

    @server.tool(idempotent=True)
    def set_flag(name: str, ctx: ToolContext) -> str:
        """Idempotent: safe to re-send."""
        ctx.state[name] = True
        return "set"

    @server.tool
    def place_order(item: str, ctx: ToolContext) -> str:
        """No annotations: not safe to re-send."""
        orders = ctx.state.setdefault("orders", [])
        orders.append(item)
        return f"order {len(orders)}"

    @server.tool
    def remember(key: str, value: str, ctx: ToolContext) -> str:
        ctx.session.data[key] = value
        return "ok"

    @server.tool
    def recall(key: str, ctx: ToolContext) -> str:
        return str(ctx.session.data.get(key, MISSING))

    @server.tool(idempotent=True)
    def resume_session(old_session_id: str, ctx: ToolContext) -> str:
        """Copy the old session's state, as a real server's resume tool does."""
        old = ctx.server.get_session(old_session_id)
        if old is None:
            raise ValueError(f"unknown session {old_session_id}")
        ctx.session.data.update(old.data)
        return "resumed"


def tools_calls(server: MockMCPServer, tool: str) -> list[RecordedRequest]:
    return server.requests_for(tool=tool)


# -- retry and classification --------------------------------------------------------------


async def test_503_is_retried_on_the_same_session_and_succeeds(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.status(503, times=2, tool="place_order")
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=STEADY, on_event=events) as client:
            result = await client.call_tool("place_order", {"item": "tea"})
            session_id = client.session_id
            stats = client.stats
    assert text(result) == "order 1"
    calls = tools_calls(mcp_mock, "place_order")
    assert [r.status for r in calls] == [503, 503, 200]
    assert {r.session_id for r in calls} == {session_id}
    assert len({r.id for r in calls}) == 3  # each attempt is a new JSON-RPC request
    assert mcp_mock.calls_to("place_order") == 1  # a 503 never reaches the tool
    assert stats.retries == 2
    assert stats.attempts == 2 + 1
    retries = events.of("retry")
    assert [e.detail["attempt"] for e in retries] == [1, 2]
    assert all(e.detail["method"] == "tools/call" and "503" in e.detail["error"] for e in retries)
    assert "session_lost" not in events.kinds
    assert stats.sessions == 1


async def test_429_waits_at_least_retry_after(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.status(429, retry_after=0.25, tool="place_order")
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=STEADY, on_event=events) as client:
            result = await client.call_tool("place_order", {"item": "tea"})
            stats = client.stats
    assert text(result) == "order 1"
    calls = tools_calls(mcp_mock, "place_order")
    assert [r.status for r in calls] == [429, 200]
    assert calls[0].faults == ["status"]
    (retry,) = events.of("retry")
    # The policy alone would wait at most 0.001 s; Retry-After says 0.25 s.
    assert retry.detail["delay"] >= 0.25
    assert "429" in retry.detail["error"]
    assert stats.retries == 1
    assert mcp_mock.calls_to("place_order") == 1


async def test_retry_after_longer_than_the_deadline_fails_fast(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.status(503, retry_after=30, tool="search")
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=STEADY, on_event=events) as client:
            with anyio.fail_after(1):  # far less than the 2 s deadline: it did not wait
                with pytest.raises(RequestTimeoutError):
                    await client.call_tool("search", {"query": "x"}, timeout=2)
    assert len(tools_calls(mcp_mock, "search")) == 1
    assert events.of("retry") == []  # it did not start a wait it could not finish


async def test_giving_up_before_the_deadline_says_why(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.status(503, retry_after=30, tool="search")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=STEADY) as client:
            with pytest.raises(RequestTimeoutError) as caught:
                await client.call_tool("search", {"query": "x"}, timeout=2)
    assert isinstance(caught.value.__cause__, HTTPStatusError)
    assert caught.value.__cause__.status_code == 503
    assert "gave up before the deadline" in str(caught.value)


@pytest.mark.parametrize("error", ["refused", "timeout"])
async def test_connect_errors_are_retried_even_for_an_unsafe_tool(
    mcp_mock: MockMCPServer, error: Any
) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.connect_error(error=error, times=3, tool="place_order")
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=STEADY, on_event=events) as client:
            result = await client.call_tool("place_order", {"item": "tea"})
            stats = client.stats
            session_id = client.session_id
    assert text(result) == "order 1"
    calls = tools_calls(mcp_mock, "place_order")
    assert [r.status for r in calls] == [None, None, None, 200]
    assert [r.faults for r in calls[:3]] == [["connect_error"]] * 3
    assert {r.session_id for r in calls} == {session_id}
    assert mcp_mock.calls_to("place_order") == 1
    assert mcp_mock.tool_executions[0].session_id == session_id
    assert stats.retries == 3
    assert stats.outcome_unknown == 0
    assert "outcome_unknown" not in events.kinds
    assert "session_lost" not in events.kinds


async def test_connect_errors_past_the_threshold_replace_the_session_on_a_single_endpoint(
    mcp_mock: MockMCPServer,
) -> None:
    """With one URL, "fail over" means a new session on the same URL (state resumed)."""
    define_tools(mcp_mock)
    events = Events()
    policy = RetryPolicy(
        initial_backoff=0.001, max_backoff=0.01, budget=None, failure_threshold=2, down_interval=5
    )
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=policy, on_event=events) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            old_id = client.session_id
            mcp_mock.faults.connect_error(times=2, tool="recall")
            result = await client.call_tool("recall", {"key": "k"})
            new_id = client.session_id
            stats = client.stats
    assert text(result) == "v"
    assert new_id != old_id
    calls = tools_calls(mcp_mock, "recall")
    assert [(r.session_id, r.status) for r in calls] == [
        (old_id, None),
        (old_id, None),
        (new_id, 200),
    ]
    assert mcp_mock.calls_to("recall") == 1
    (down,) = events.of("endpoint_down")
    assert down.endpoint == mcp_mock.url
    (lost,) = events.of("session_lost")
    assert lost.detail["reason"] == "not sent"
    assert lost.session_id == old_id
    (resume,) = tools_calls(mcp_mock, "resume_session")
    assert resume.arguments == {"old_session_id": old_id}
    assert "failover" not in events.kinds  # same URL
    assert stats.failovers == 0
    assert stats.outcome_unknown == 0


@pytest.mark.parametrize("error", ["disconnect", "read_error", "read_timeout"])
async def test_lost_answer_of_an_unsafe_tool_raises_outcome_unknown(
    mcp_mock: MockMCPServer, error: Any
) -> None:
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            await client.list_tools()  # annotations known: place_order has none
            assert client.cached_tool("place_order").annotations is None  # type: ignore[union-attr]
            session_id = client.session_id
            mcp_mock.faults.lose_response(error=error, tool="place_order")
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.call_tool("place_order", {"item": "tea"})
            stats = client.stats
            # The client stays usable afterwards.
            after = await client.call_tool("search", {"query": "x"})
    assert text(after) == "results for x"
    exc = caught.value
    (call,) = tools_calls(mcp_mock, "place_order")  # NOT re-sent
    assert call.status is None and call.faults == ["lose_response"]
    assert mcp_mock.calls_to("place_order") == 1  # it did run
    assert exc.method == "tools/call"
    assert exc.tool == "place_order"
    assert exc.request_id == call.id
    assert exc.endpoint == mcp_mock.url
    assert exc.session_id == session_id
    assert "place_order" in str(exc)
    assert isinstance(exc.__cause__, TransportError)
    (event,) = events.of("outcome_unknown")
    assert event.detail["method"] == "tools/call"
    assert event.detail["tool"] == "place_order"
    assert event.detail["request_id"] == call.id
    assert event.session_id == session_id
    assert stats.outcome_unknown == 1
    assert events.of("retry") == []


@pytest.mark.parametrize("tool", ["search", "set_flag"])
async def test_lost_answer_of_an_annotated_safe_tool_is_resent(
    mcp_mock: MockMCPServer, tool: str
) -> None:
    define_tools(mcp_mock)
    arguments = {"query": "x"} if tool == "search" else {"name": "x"}
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            await client.list_tools()
            mcp_mock.faults.lose_response(tool=tool)
            result = await client.call_tool(tool, arguments)
            stats = client.stats
    assert not result.is_error
    calls = tools_calls(mcp_mock, tool)
    assert [r.status for r in calls] == [None, 200]
    assert calls[0].id != calls[1].id
    assert mcp_mock.calls_to(tool) == 2
    assert stats.outcome_unknown == 0
    assert stats.retries == 1
    assert events.of("retry")[0].detail["method"] == "tools/call"


async def test_lost_answer_with_idempotent_true_is_resent(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.lose_response(tool="place_order")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            result = await client.call_tool("place_order", {"item": "tea"}, idempotent=True)
    assert text(result) == "order 2"  # the caller said running twice is fine
    assert [r.status for r in tools_calls(mcp_mock, "place_order")] == [None, 200]
    assert mcp_mock.calls_to("place_order") == 2


async def test_lost_answer_with_idempotent_false_on_a_read_only_tool_is_not_resent(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            await client.list_tools()
            mcp_mock.faults.lose_response(tool="search")
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.call_tool("search", {"query": "x"}, idempotent=False)
    assert caught.value.tool == "search"
    assert len(tools_calls(mcp_mock, "search")) == 1


async def test_lost_answer_with_untrusted_annotations_is_not_resent(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, trust_annotations=False) as client:
            tools = {t.name: t for t in await client.list_tools()}
            assert tools["search"].annotations.read_only_hint  # type: ignore[union-attr]
            mcp_mock.faults.lose_response(tool="search")
            with pytest.raises(OutcomeUnknownError):
                await client.call_tool("search", {"query": "x"})
    assert len(tools_calls(mcp_mock, "search")) == 1


async def test_annotations_are_looked_up_before_declaring_an_outcome_unknown(
    mcp_mock: MockMCPServer,
) -> None:
    """No ``list_tools`` yet: the client lists the tools to read the annotations first."""
    define_tools(mcp_mock)
    mcp_mock.faults.lose_response(tool="search")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            result = await client.call_tool("search", {"query": "x"})
            assert client.cached_tool("search") is not None
    assert text(result) == "results for x"
    lost, resent = tools_calls(mcp_mock, "search")
    assert (lost.status, resent.status) == (None, 200)
    lookups = [r for r in mcp_mock.requests_for("tools/list") if lost.index < r.index]
    assert lookups and lookups[0].index < resent.index
    assert mcp_mock.calls_to("search") == 2


async def test_annotation_lookup_finds_an_unsafe_tool_unsafe(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.lose_response(tool="place_order")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            with pytest.raises(OutcomeUnknownError):
                await client.call_tool("place_order", {"item": "tea"})
    assert len(tools_calls(mcp_mock, "place_order")) == 1
    assert mcp_mock.calls_to("place_order") == 1


@pytest.mark.parametrize("how", ["idempotent_false", "untrusted"])
async def test_no_annotation_lookup_when_annotations_cannot_matter(
    mcp_mock: MockMCPServer, how: str
) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.lose_response(tool="search")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, trust_annotations=how != "untrusted"
        ) as client:
            with pytest.raises(OutcomeUnknownError):
                await client.call_tool(
                    "search",
                    {"query": "x"},
                    idempotent=False if how == "idempotent_false" else None,
                )
    assert len(tools_calls(mcp_mock, "search")) == 1
    assert mcp_mock.requests_for("tools/list") == []


@pytest.mark.parametrize("method", ["resources/read", "tools/list", "ping"])
async def test_lost_answer_of_a_read_method_is_resent(mcp_mock: MockMCPServer, method: str) -> None:
    mcp_mock.add_resource("file:///a.txt", "hello")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            mcp_mock.faults.lose_response(method=method)
            if method == "resources/read":
                read = await client.read_resource("file:///a.txt")
                assert isinstance(read.contents[0], mt.TextResourceContents)
                assert read.contents[0].text == "hello"
            elif method == "tools/list":
                assert await client.list_tools() == []
            else:
                await client.ping()
    statuses = [r.status for r in mcp_mock.requests_for(method)]
    if method == "tools/list":
        # The lost answer dropped the session; the new one looks for the resume tool.
        assert statuses == [None, 200, 200]
    else:
        assert statuses == [None, 200]


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_in_doubt_statuses_raise_outcome_unknown_for_an_unsafe_tool(
    mcp_mock: MockMCPServer, status: int
) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.status(status, tool="place_order")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.call_tool("place_order", {"item": "tea"})
    assert isinstance(caught.value.__cause__, HTTPStatusError)
    assert caught.value.__cause__.status_code == status
    assert len(tools_calls(mcp_mock, "place_order")) == 1


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_in_doubt_statuses_are_retried_for_a_safe_tool(
    mcp_mock: MockMCPServer, status: int
) -> None:
    define_tools(mcp_mock)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            await client.list_tools()
            mcp_mock.faults.status(status, tool="search")
            result = await client.call_tool("search", {"query": "x"})
    assert text(result) == "results for x"
    assert [r.status for r in tools_calls(mcp_mock, "search")] == [status, 200]


async def test_json_rpc_error_is_never_retried(mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool(read_only=True)
    def strict(value: int) -> str:
        raise RPCError(-32602, "value out of range", {"max": 3})

    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            await client.list_tools()
            with pytest.raises(ServerError) as caught:
                await client.call_tool("strict", {"value": 7}, idempotent=True)
            stats = client.stats
    assert caught.value.code == -32602
    assert caught.value.data == {"max": 3}
    assert len(tools_calls(mcp_mock, "strict")) == 1
    assert stats.retries == 0
    assert events.of("retry") == []


async def test_tool_error_result_is_never_retried(mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool(read_only=True)
    def flaky(n: int) -> str:
        raise RuntimeError("disk on fire")

    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            await client.list_tools()
            result = await client.call_tool("flaky", {"n": 1}, idempotent=True)
            stats = client.stats
    assert result.is_error
    assert "disk on fire" in text(result)
    assert len(tools_calls(mcp_mock, "flaky")) == 1
    assert stats.retries == 0


@pytest.mark.parametrize("status", [400, 401, 403, 405, 409, 422])
async def test_other_4xx_are_final(mcp_mock: MockMCPServer, status: int) -> None:
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            await client.list_tools()
            mcp_mock.faults.status(status, tool="search")
            with pytest.raises(HTTPStatusError) as caught:
                await client.call_tool("search", {"query": "x"}, idempotent=True)
            stats = client.stats
    assert caught.value.status_code == status
    assert not isinstance(caught.value, SessionExpiredError)
    assert len(tools_calls(mcp_mock, "search")) == 1
    assert stats.retries == 0
    assert "session_lost" not in events.kinds


async def test_404_on_initialize_without_a_session_is_final(mcp_mock: MockMCPServer) -> None:
    """A 404 with no session id means a wrong URL, not a lost session."""
    with anyio.fail_after(LIMIT):
        with pytest.raises(HTTPStatusError) as caught:
            async with ResilientClient("http://mcp.test/wrong", retry=FAST):
                pass
    assert caught.value.status_code == 404
    assert not isinstance(caught.value, SessionExpiredError)
    # "auto": the server/discover probe, then the handshake it falls back to; no retry.
    assert [r.method for r in mcp_mock.requests] == ["server/discover", "initialize"]


async def test_deadline_ends_an_outage_that_never_ends(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            fault = mcp_mock.faults.status(503, times=None, tool="search")
            with pytest.raises(RequestTimeoutError) as caught:
                await client.call_tool("search", {"query": "x"}, timeout=0.5)
            fault.cancel()
            # The client is still usable with the outage over.
            assert text(await client.call_tool("search", {"query": "y"})) == "results for y"
    assert isinstance(caught.value, TimeoutError)
    assert fault.fired >= 2  # it did keep retrying until the deadline
    # Every 503 but the last was followed by a retry (the last one ran out of time).
    assert fault.fired - 1 <= len(events.of("retry")) <= fault.fired
    assert all(r.status == 503 for r in tools_calls(mcp_mock, "search")[:-1])


async def test_max_attempts_gives_up_with_the_last_error(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.status(503, times=None, tool="place_order")
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.001, max_backoff=0.01, budget=None)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=policy) as client:
            with pytest.raises(HTTPStatusError) as caught:
                await client.call_tool("place_order", {"item": "tea"})
            stats = client.stats
    assert caught.value.status_code == 503
    assert [r.status for r in tools_calls(mcp_mock, "place_order")] == [503, 503]
    assert stats.retries == 1
    assert mcp_mock.calls_to("place_order") == 0


async def test_max_attempts_one_never_retries(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.connect_error(tool="search")
    policy = RetryPolicy(max_attempts=1, budget=None)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=policy) as client:
            with pytest.raises(TransportError):
                await client.call_tool("search", {"query": "x"})
    assert len(tools_calls(mcp_mock, "search")) == 1


async def test_exhausted_retry_budget_throttles_to_max_backoff(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    events = Events()
    throttled = RetryPolicy(
        initial_backoff=0.0001,
        max_backoff=0.05,
        budget=RetryBudget(max_tokens=2),
        failure_threshold=100,
    )
    mcp_mock.faults.status(503, times=3, tool="search")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=throttled, on_event=events) as client:
            result = await client.call_tool("search", {"query": "x"})
    assert text(result) == "results for x"
    delays = [e.detail["delay"] for e in events.of("retry")]
    assert len(delays) == 3
    # One failure leaves 1 of 2 tokens (half): throttled. The backoff alone is <= 0.0004 s.
    assert all(d >= 0.05 for d in delays), delays


async def test_retry_budget_does_not_throttle_before_it_is_half_spent(
    mcp_mock: MockMCPServer,
) -> None:
    """The control for the test above: same faults, a budget with room, no throttling."""
    define_tools(mcp_mock)
    events = Events()
    roomy = RetryPolicy(
        initial_backoff=0.0001,
        max_backoff=0.05,
        budget=RetryBudget(max_tokens=10),
        failure_threshold=100,
    )
    mcp_mock.faults.status(503, times=3, tool="search")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=roomy, on_event=events) as client:
            await client.call_tool("search", {"query": "x"})
    delays = [e.detail["delay"] for e in events.of("retry")]
    assert len(delays) == 3
    assert all(d < 0.05 for d in delays), delays


# -- session recovery ----------------------------------------------------------------------


async def test_expired_session_is_replaced_resumed_and_the_call_resent(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            await client.call_tool("remember", {"key": "basket", "value": "tea"})
            old_id = client.session_id
            mcp_mock.faults.expire_session(tool="recall")
            # recall has no annotations: a 404 means "not run", so it is re-sent anyway.
            result = await client.call_tool("recall", {"key": "basket"})
            new_id = client.session_id
            stats = client.stats
    assert old_id is not None and new_id is not None and new_id != old_id
    assert text(result) == "tea"  # re-sent on the new session, with the state carried over
    assert mcp_mock.get_session(new_id).data == {"basket": "tea"}  # type: ignore[union-attr]
    assert old_id in mcp_mock.expired_sessions

    calls = tools_calls(mcp_mock, "recall")
    assert [(r.session_id, r.status) for r in calls] == [(old_id, 404), (new_id, 200)]
    assert mcp_mock.calls_to("recall") == 1

    first_init, re_init = mcp_mock.requests_for("initialize")
    assert first_init.session_id is None
    assert "mcp-session-id" not in re_init.headers  # a fresh initialize, no session id
    assert re_init.index > calls[0].index

    (resume,) = tools_calls(mcp_mock, "resume_session")
    assert resume.arguments == {"old_session_id": old_id}
    assert resume.session_id == new_id
    assert resume.protocol_version == "2025-11-25"
    assert re_init.index < resume.index < calls[1].index

    recovery = [
        k for k in events.kinds if k in ("session_lost", "session_started", "session_resumed")
    ]
    assert recovery == ["session_started", "session_lost", "session_started", "session_resumed"]
    (lost,) = events.of("session_lost")
    assert lost.session_id == old_id
    assert lost.detail["reason"] == "session lost"
    assert events.of("session_started")[1].session_id == new_id
    (resumed,) = events.of("session_resumed")
    assert resumed.session_id == new_id
    assert resumed.detail["old_session_id"] == old_id
    assert (stats.sessions, stats.sessions_lost, stats.resumes, stats.failovers) == (2, 1, 1, 0)
    assert stats.resume_failures == 0
    assert stats.outcome_unknown == 0


async def test_a_404_status_to_a_request_with_a_session_is_a_lost_session(
    mcp_mock: MockMCPServer,
) -> None:
    """Decided from the status and the session id sent, not from the body text."""
    define_tools(mcp_mock)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            old_id = client.session_id
            mcp_mock.faults.status(404, body="nothing to see", tool="place_order")
            result = await client.call_tool("place_order", {"item": "tea"})
            new_id = client.session_id
    assert text(result) == "order 1"
    assert new_id != old_id
    calls = tools_calls(mcp_mock, "place_order")
    assert [(r.session_id, r.status) for r in calls] == [(old_id, 404), (new_id, 200)]


async def test_recovery_retries_a_refused_handshake(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=STEADY, on_event=events) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            mcp_mock.expire_session()
            mcp_mock.faults.status(503, times=2, method="initialize")
            result = await client.call_tool("recall", {"key": "k"})
    assert text(result) == "v"
    inits = mcp_mock.requests_for("initialize")
    assert [r.status for r in inits] == [200, 503, 503, 200]
    assert all(r.session_id is None for r in inits)
    # Each retry is reported once it has somewhere to go: the handshake's two first, then
    # the call's, on the new session.
    assert [e.detail["method"] for e in events.of("retry")] == [
        "initialize",
        "initialize",
        "tools/call",
    ]
    assert len(tools_calls(mcp_mock, "resume_session")) == 1


async def test_no_resume_tool_listed_means_no_resume_call_and_no_error(
    mcp_mock: MockMCPServer,
) -> None:
    @mcp_mock.tool
    def recall(ctx: ToolContext) -> str:
        return str(ctx.session.data.get("k", MISSING))

    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            mcp_mock.sessions[client.session_id].data["k"] = "v"  # type: ignore[index]
            mcp_mock.expire_session()
            first = await client.call_tool("recall")
            second = await client.call_tool("recall")
            stats = client.stats
    assert text(first) == text(second) == MISSING  # nothing carried over, by design
    assert len(mcp_mock.requests_for("tools/list")) == 1  # it looked for the resume tool
    assert tools_calls(mcp_mock, "resume_session") == []
    assert "session_resumed" not in events.kinds
    assert "resume_failed" not in events.kinds
    assert (stats.sessions, stats.resumes, stats.resume_failures) == (2, 0, 0)


async def test_resume_tool_none_is_never_called(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, resume_tool=None, on_event=events
        ) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            mcp_mock.expire_session()
            result = await client.call_tool("recall", {"key": "k"})
            stats = client.stats
    assert text(result) == MISSING
    assert tools_calls(mcp_mock, "resume_session") == []
    assert mcp_mock.requests_for("tools/list") == []  # did not even look
    assert len(mcp_mock.requests_for("initialize")) == 2
    assert "session_resumed" not in events.kinds
    assert stats.resumes == 0


async def test_custom_resume_tool_name(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)

    @mcp_mock.tool
    def migrate(old_session_id: str, ctx: ToolContext) -> str:
        old = ctx.server.get_session(old_session_id)
        assert old is not None
        ctx.session.data.update(old.data)
        return "migrated"

    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, resume_tool="migrate", on_event=events
        ) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            old_id = client.session_id
            mcp_mock.expire_session()
            result = await client.call_tool("recall", {"key": "k"})
            new_id = client.session_id
    assert text(result) == "v"
    (migrate_call,) = tools_calls(mcp_mock, "migrate")
    assert migrate_call.arguments == {"old_session_id": old_id}
    assert migrate_call.session_id == new_id
    assert tools_calls(mcp_mock, "resume_session") == []
    (resumed,) = events.of("session_resumed")
    assert resumed.detail["old_session_id"] == old_id


def failing_resume_tool(server: MockMCPServer, how: str) -> None:
    @server.tool
    def recall(ctx: ToolContext) -> str:
        return str(ctx.session.data.get("k", MISSING))

    @server.tool(idempotent=True)
    def resume_session(old_session_id: str) -> str:
        if how == "rpc_error":
            raise RPCError(-32603, "resume store unavailable")
        raise RuntimeError("resume store unavailable")  # a result with isError: true


@pytest.mark.parametrize("how", ["is_error", "rpc_error"])
async def test_failed_resume_raises_resume_failed_once(mcp_mock: MockMCPServer, how: str) -> None:
    failing_resume_tool(mcp_mock, how)
    events = Events()
    outcomes: list[Any] = []
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            old_id = client.session_id
            mcp_mock.expire_session()
            for _ in range(4):
                try:
                    outcomes.append(text(await client.call_tool("recall")))
                except ResumeFailedError as exc:
                    outcomes.append(exc)
            new_id = client.session_id
            stats = client.stats
    errors = [o for o in outcomes if isinstance(o, ResumeFailedError)]
    assert len(errors) == 1, outcomes  # raised exactly once ...
    position = outcomes.index(errors[0])
    assert position <= 1, outcomes  # ... by the call that recovered or the one after it
    assert outcomes[position + 1 :] == [MISSING] * (3 - position)  # then calls work
    error = errors[0]
    assert error.old_session_id == old_id
    assert error.session_id == new_id
    assert "resume_session" in str(error)
    (failed,) = events.of("resume_failed")
    assert failed.detail["old_session_id"] == old_id
    assert failed.session_id == new_id
    assert "resume store unavailable" in failed.detail["error"]
    assert "session_resumed" not in events.kinds
    assert (stats.resume_failures, stats.resumes, stats.sessions) == (1, 0, 2)
    assert len(tools_calls(mcp_mock, "resume_session")) == 1


async def test_the_call_that_hit_a_failed_resume_is_not_silently_run_without_state(
    mcp_mock: MockMCPServer,
) -> None:
    failing_resume_tool(mcp_mock, "is_error")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            mcp_mock.sessions[client.session_id].data["k"] = "v"  # type: ignore[index]
            mcp_mock.expire_session()
            with pytest.raises(ResumeFailedError):
                await client.call_tool("recall")
    # It must not have run on a session that lacks the state it may depend on.
    assert mcp_mock.calls_to("recall") == 0


async def test_failed_resume_with_ignore_raises_nothing(mcp_mock: MockMCPServer) -> None:
    failing_resume_tool(mcp_mock, "is_error")
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, on_event=events, on_resume_failure="ignore"
        ) as client:
            mcp_mock.expire_session()
            results = [text(await client.call_tool("recall")) for _ in range(3)]
            stats = client.stats
    assert results == [MISSING] * 3
    assert len(events.of("resume_failed")) == 1
    assert stats.resume_failures == 1


async def test_concurrent_calls_on_an_expired_session_share_one_recovery(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    events = Events()
    results: dict[int, str] = {}
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            old_id = client.session_id
            mcp_mock.expire_session()
            # Hold the first ten requests in the server so all ten are in flight on the
            # old session at once and all ten get its 404.
            hold = mcp_mock.faults.delay(0.05, times=10, tool="search")

            async def one(i: int) -> None:
                results[i] = text(await client.call_tool("search", {"query": str(i)}))

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(one, i)
            new_id = client.session_id
            stats = client.stats
    assert results == {i: f"results for {i}" for i in range(10)}
    assert hold.fired == 10
    calls = tools_calls(mcp_mock, "search")
    assert sorted((r.session_id, r.status) for r in calls) == sorted(
        [(old_id, 404)] * 10 + [(new_id, 200)] * 10
    )
    assert len(mcp_mock.requests_for("initialize")) == 2  # exactly one new initialize
    assert len(tools_calls(mcp_mock, "resume_session")) == 1
    assert len(events.of("session_lost")) == 1
    assert (stats.sessions, stats.sessions_lost, stats.resumes) == (2, 1, 1)
    assert mcp_mock.calls_to("search") == 10


async def test_calls_during_recovery_wait_for_the_state_to_be_resumed(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    outcome: dict[str, str] = {}
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            mcp_mock.expire_session()
            mcp_mock.faults.delay(0.3, tool="resume_session")  # a resume that takes a while

            async def first() -> None:
                outcome["first"] = text(await client.call_tool("recall", {"key": "k"}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                # The first call is recovering: the new session is open, the resume under way.
                await wait_until(lambda: len(tools_calls(mcp_mock, "resume_session")) == 1)
                outcome["second"] = text(await client.call_tool("recall", {"key": "k"}))
    assert outcome == {"first": "v", "second": "v"}


async def test_a_resume_cut_short_by_the_caller_deadline_is_not_silently_dropped(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            mcp_mock.expire_session()
            mcp_mock.faults.delay(0.5, tool="resume_session")
            with pytest.raises(RequestTimeoutError):
                await client.call_tool("recall", {"key": "k"}, timeout=0.2)
            try:
                later = text(await client.call_tool("recall", {"key": "k"}))
            except ResumeFailedError:
                later = "resume failed (reported)"
    # Either the state made it over after all, or the loss was reported.
    assert later in ("v", "resume failed (reported)")
    assert later == "v" or events.of("resume_failed")


async def test_a_late_404_from_the_old_session_does_not_tear_down_the_new_one(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    events = Events()
    outcome: dict[str, str] = {}
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            old_id = client.session_id
            # The slow call reaches the server on the old session, then waits there.
            mcp_mock.faults.delay(0.4, tool="search")

            async def slow() -> None:
                outcome["slow"] = text(await client.call_tool("search", {"query": "slow"}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                await wait_until(lambda: len(tools_calls(mcp_mock, "search")) == 1)
                # Meanwhile the session expires; a fast call finds out and recovers.
                mcp_mock.expire_session()
                fast = await client.call_tool("place_order", {"item": "tea"})
                new_id = client.session_id
                assert new_id != old_id
                assert "slow" not in outcome  # still waiting on the old session
            assert new_id in mcp_mock.sessions  # still live on the server
            final_id = client.session_id
            stats = client.stats
    assert text(fast) == "order 1"
    assert outcome["slow"] == "results for slow"
    # The slow call got its 404 from the OLD session after the move...
    slow_calls = tools_calls(mcp_mock, "search")
    assert [(r.session_id, r.status) for r in slow_calls] == [(old_id, 404), (new_id, 200)]
    retries = events.of("retry")
    assert len(retries) == 2
    assert events.items.index(retries[-1]) > events.index("session_started", 1)
    # ... and the new session survived it: one extra initialize, one loss.
    assert final_id == new_id
    assert len(mcp_mock.requests_for("initialize")) == 2
    assert len(events.of("session_lost")) == 1
    assert (stats.sessions, stats.sessions_lost) == (2, 1)


async def test_a_late_in_doubt_failure_from_the_old_session_keeps_the_new_one(
    mcp_mock: MockMCPServer,
) -> None:
    """Same guard for a lost answer (not a 404) that arrives after the move."""
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, on_event=events) as client:
            await client.list_tools()
            old_id = client.session_id
            mcp_mock.faults.delay(0.4, tool="search")
            mcp_mock.faults.lose_response(tool="search")
            outcome: dict[str, str] = {}

            async def slow() -> None:
                outcome["slow"] = text(await client.call_tool("search", {"query": "s"}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                await wait_until(lambda: len(tools_calls(mcp_mock, "search")) == 1)
                mcp_mock.faults.expire_session(tool="place_order")
                await client.call_tool("place_order", {"item": "tea"})
                new_id = client.session_id
            final_id = client.session_id
    assert outcome["slow"] == "results for s"
    assert new_id != old_id
    assert final_id == new_id
    assert len(mcp_mock.requests_for("initialize")) == 2
    assert len(events.of("session_lost")) == 1
    assert [r.session_id for r in tools_calls(mcp_mock, "search")] == [old_id, new_id]


# -- failover across URLs ------------------------------------------------------------------

FAILOVER = RetryPolicy(
    initial_backoff=0.001, max_backoff=0.01, budget=None, failure_threshold=1, down_interval=5.0
)
"""One failure marks an endpoint down, and it stays down for the whole test."""


async def test_endpoint_down_fails_over_and_resumes(mcp_mock_cluster: MockClusterFactory) -> None:
    cluster = mcp_mock_cluster(n=3)
    define_tools(cluster)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(cluster.urls, retry=FAILOVER, on_event=events) as client:
            await client.call_tool("remember", {"key": "cart", "value": "tea"})
            first, old_id = client.endpoint, client.session_id
            assert first is not None
            cluster.take_down(first)
            result = await client.call_tool("recall", {"key": "cart"})
            second, new_id = client.endpoint, client.session_id
            stats = client.stats
    assert text(result) == "tea"  # state carried over to the other node
    assert second != first and second in cluster.urls
    assert new_id != old_id

    on_first = [r for r in tools_calls(cluster, "recall") if r.endpoint == first]
    assert len(on_first) == FAILOVER.failure_threshold
    assert all(r.faults == ["down"] and r.status is None for r in on_first)
    (done,) = [r for r in tools_calls(cluster, "recall") if r.endpoint != first]
    assert (done.endpoint, done.session_id, done.status) == (second, new_id, 200)
    assert cluster.calls_to("recall") == 1

    init = cluster.requests_for("initialize")[-1]
    assert (init.endpoint, init.session_id) == (second, None)
    (resume,) = tools_calls(cluster, "resume_session")
    assert (resume.endpoint, resume.arguments) == (second, {"old_session_id": old_id})

    (down,) = events.of("endpoint_down")
    assert down.endpoint == first
    (lost,) = events.of("session_lost")
    assert (lost.endpoint, lost.session_id, lost.detail["reason"]) == (first, old_id, "not sent")
    (failover,) = events.of("failover")
    assert failover.endpoint == second
    assert failover.session_id == new_id
    assert failover.detail["from_endpoint"] == first
    order = [
        k
        for k in events.kinds
        if k in ("endpoint_down", "session_lost", "session_started", "failover", "session_resumed")
    ]
    assert order == [
        "session_started",
        "endpoint_down",
        "session_lost",
        "session_started",
        "failover",
        "session_resumed",
    ]
    assert (stats.failovers, stats.sessions, stats.sessions_lost, stats.resumes) == (1, 2, 1, 1)
    # The DELETE on close went to the live node.
    (delete,) = cluster.requests_for(http_method="DELETE")
    assert (delete.endpoint, delete.session_id) == (second, new_id)


async def test_first_refused_connect_moves_the_session_when_other_endpoints_exist(
    mcp_mock_cluster: MockClusterFactory,
) -> None:
    """Below the failure threshold the endpoint is not marked down, but the session moves."""
    cluster = mcp_mock_cluster(n=2)
    define_tools(cluster)
    events = Events()
    policy = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, budget=None, failure_threshold=3)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(cluster.urls, retry=policy, on_event=events) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            first = client.endpoint
            cluster.faults.connect_error(url=first, tool="recall")  # one refusal only
            result = await client.call_tool("recall", {"key": "k"})
            second = client.endpoint
            stats = client.stats
    assert text(result) == "v"
    assert second != first
    calls = tools_calls(cluster, "recall")
    assert [(r.endpoint, r.status) for r in calls] == [(first, None), (second, 200)]
    assert events.of("endpoint_down") == []  # 1 failure < threshold 3
    (failover,) = events.of("failover")
    assert failover.detail["from_endpoint"] == first
    assert stats.failovers == 1


async def test_down_endpoint_is_avoided_by_later_sessions(
    mcp_mock_cluster: MockClusterFactory,
) -> None:
    cluster = mcp_mock_cluster(n=2)
    define_tools(cluster)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(cluster.urls, retry=FAILOVER) as client:
            first = client.endpoint
            assert first is not None
            cluster.take_down(first)
            await client.call_tool("search", {"query": "x"})
            second = client.endpoint
            cluster.bring_up(first)  # up again, but the pool does not know yet (no probe yet)
            for _ in range(3):
                cluster.expire_session()
                await client.call_tool("search", {"query": "x"})
                assert client.endpoint == second
    assert [r.endpoint for r in cluster.requests_for("initialize")] == [first] + [second] * 4


async def test_probe_brings_a_down_endpoint_back(mcp_mock_cluster: MockClusterFactory) -> None:
    cluster = mcp_mock_cluster(n=2)
    define_tools(cluster)
    events = Events()
    policy = RetryPolicy(
        initial_backoff=0.001, max_backoff=0.01, budget=None, failure_threshold=1,
        down_interval=0.02, max_down_interval=0.05,
    )  # fmt: skip
    with anyio.fail_after(LIMIT):
        async with ResilientClient(cluster.urls, retry=policy, on_event=events) as client:
            first = client.endpoint
            assert first is not None
            cluster.take_down(first)
            await client.call_tool("search", {"query": "x"})
            await events.wait_for("endpoint_down", lambda e: e.endpoint == first)

            def probes(status: int | None) -> list[RecordedRequest]:
                return [
                    r
                    for r in cluster.requests_for(http_method="GET", url=first)
                    if r.session_id is None and r.status == status
                ]

            await wait_until(lambda: len(probes(None)) >= 1)  # a probe found it still down
            assert not events.of("endpoint_up")
            cluster.bring_up(first)
            up = await events.wait_for("endpoint_up", lambda e: e.endpoint == first)
            stats = client.stats
    assert up.detail.get("probe") is True
    assert probes(400)  # the probe that succeeded: any HTTP answer means "up"
    assert all(r.faults == ["down"] for r in probes(None))
    assert stats.failovers == 1


async def test_persistent_503_on_one_node_fails_over(mcp_mock_cluster: MockClusterFactory) -> None:
    cluster = mcp_mock_cluster(n=2)
    define_tools(cluster)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(cluster.urls, retry=FAILOVER, on_event=events) as client:
            first = client.endpoint
            assert first is not None
            cluster.faults.status(503, times=None, url=first)  # e.g. a node that is draining
            result = await client.call_tool("place_order", {"item": "tea"}, timeout=1)
            second = client.endpoint
    assert text(result) == "order 1"
    assert second != first
    assert [e.endpoint for e in events.of("endpoint_down")] == [first]
    assert events.of("failover")[0].detail["from_endpoint"] == first


async def test_all_nodes_down_then_one_back(mcp_mock_cluster: MockClusterFactory) -> None:
    cluster = mcp_mock_cluster(n=2)
    define_tools(cluster)
    events = Events()
    policy = RetryPolicy(
        initial_backoff=0.001, max_backoff=0.02, budget=None, failure_threshold=1,
        down_interval=0.01, max_down_interval=0.05,
    )  # fmt: skip
    with anyio.fail_after(LIMIT):
        async with ResilientClient(cluster.urls, retry=policy, on_event=events) as client:
            await client.call_tool("remember", {"key": "k", "value": "v"})
            old_id = client.session_id
            cluster.take_down()
            outcome: dict[str, str] = {}

            async def call() -> None:
                result = await client.call_tool("recall", {"key": "k"}, timeout=8)
                outcome["recall"] = text(result)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                # Both nodes have refused a new session at least once: all down.
                await wait_until(
                    lambda: all(
                        any(r.faults == ["down"] for r in cluster.requests_for("initialize", url=u))
                        for u in cluster.urls
                    )
                )
                cluster.bring_up(cluster.urls[1])
            endpoint = client.endpoint
    assert outcome["recall"] == "v"
    assert endpoint == cluster.urls[1]
    assert cluster.calls_to("recall") == 1
    (resume,) = tools_calls(cluster, "resume_session")
    assert resume.arguments == {"old_session_id": old_id}
    assert {e.endpoint for e in events.of("endpoint_down")} == set(cluster.urls)
