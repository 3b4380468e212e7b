"""How a user tests an agent: ``ResilientClient`` against the ``mcp_mock`` fixtures."""

from __future__ import annotations

from typing import Any

import mcp_types as mt
import pytest

from mcp_resilient import OutcomeUnknownError, ResilientClient, RetryPolicy
from mcp_resilient.testing import MockClusterFactory, MockMCPServer, ToolContext

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.005, down_interval=0.01, budget=None)


def define_tools(server: MockMCPServer) -> None:
    @server.tool(read_only=True)
    def search(query: str) -> str:
        """Search the catalogue."""
        return f"3 results for {query}"

    @server.tool(destructive=True)
    def place_order(item: str, ctx: ToolContext) -> dict[str, Any]:
        orders = ctx.state.setdefault("orders", [])
        orders.append(item)
        return {"order": len(orders)}

    @server.tool(idempotent=True)
    def resume_session(old_session_id: str, ctx: ToolContext) -> str:
        old = ctx.server.get_session(old_session_id)
        if old is not None:
            ctx.session.data.update(old.data)
        return "ok"


async def test_list_and_call(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    async with ResilientClient(mcp_mock.url, retry=FAST) as client:
        tools = await client.list_tools()
        result = await client.call_tool("search", {"query": "tea"})
        session_id = client.session_id
    assert {t.name for t in tools} == {"search", "place_order", "resume_session"}
    assert isinstance(result, mt.CallToolResult)
    assert result.content == [mt.TextContent(text="3 results for tea")]
    (call,) = mcp_mock.requests_for(tool="search")
    assert call.session_id == session_id
    assert call.protocol_version == "2025-11-25"
    assert mcp_mock.requests_for(http_method="DELETE")[0].session_id == session_id


async def test_retries_a_503(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.status(503, times=2, tool="place_order")
    async with ResilientClient(mcp_mock.url, retry=FAST) as client:
        result = await client.call_tool("place_order", {"item": "tea"})
    assert result.structured_content == {"order": 1}
    assert [r.status for r in mcp_mock.requests_for(tool="place_order")] == [503, 503, 200]
    assert mcp_mock.calls_to("place_order") == 1


async def test_expired_session_is_replaced_and_resumed(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    async with ResilientClient(mcp_mock.url, retry=FAST) as client:
        await client.list_tools()
        old_id = client.session_id
        assert old_id is not None
        mcp_mock.sessions[old_id].data["basket"] = ["tea"]
        mcp_mock.faults.expire_session(tool="search")
        result = await client.call_tool("search", {"query": "cups"})
        new_id = client.session_id
    assert not result.is_error
    assert new_id not in (None, old_id)
    (resume,) = mcp_mock.requests_for(tool="resume_session")
    assert resume.arguments == {"old_session_id": old_id}
    assert resume.session_id == new_id
    assert mcp_mock.get_session(new_id).data == {"basket": ["tea"]}  # type: ignore[union-attr]
    # The re-initialize carried no session id.
    assert mcp_mock.requests_for("initialize")[-1].session_id is None


async def test_lost_answer_of_an_unsafe_tool_is_not_resent(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.lose_response(tool="place_order")
    async with ResilientClient(mcp_mock.url, retry=FAST) as client:
        await client.list_tools()
        with pytest.raises(OutcomeUnknownError):
            await client.call_tool("place_order", {"item": "tea"})
    assert mcp_mock.calls_to("place_order") == 1


async def test_lost_answer_of_a_read_only_tool_is_resent(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.lose_response(tool="search")
    async with ResilientClient(mcp_mock.url, retry=FAST) as client:
        await client.list_tools()
        result = await client.call_tool("search", {"query": "tea"})
    assert not result.is_error
    assert mcp_mock.calls_to("search") == 2


async def test_cut_stream_is_resumed_with_last_event_id(mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    def report(ctx: ToolContext) -> str:
        for step in (1, 2, 3):
            ctx.progress(step, total=3)
        return "done"

    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    mcp_mock.faults.cut_stream(after_events=2, tool="report")
    async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
        result = await client.call_tool("report", progress_handler=on_progress)
    assert result.content == [mt.TextContent(text="done")]
    assert mcp_mock.calls_to("report") == 1  # resumed, not re-sent
    resumes = [r for r in mcp_mock.requests_for(http_method="GET") if r.last_event_id]
    assert len(resumes) == 1
    assert seen == [1, 2, 3]


async def test_failover_across_a_cluster(mcp_mock_cluster: MockClusterFactory) -> None:
    cluster = mcp_mock_cluster(n=2)
    define_tools(cluster)
    async with ResilientClient(cluster.urls, retry=FAST) as client:
        await client.list_tools()
        cluster.take_down(cluster.urls[0])
        result = await client.call_tool("search", {"query": "tea"})
    assert not result.is_error
    assert cluster.requests_for(tool="search")[-1].endpoint == cluster.urls[1]
