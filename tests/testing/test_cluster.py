"""Several URLs over one backend: failover, shared sessions, per-node faults."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mcp_resilient.testing import MockClusterFactory, MockServerFactory, ToolContext

pytestmark = pytest.mark.anyio


async def test_sessions_survive_across_urls(
    mcp_mock_cluster: MockClusterFactory, make_wire: Any
) -> None:
    cluster = mcp_mock_cluster(n=3)
    assert cluster.urls == [
        "http://mcp-1.test/mcp",
        "http://mcp-2.test/mcp",
        "http://mcp-3.test/mcp",
    ]

    @cluster.tool
    def where(ctx: ToolContext) -> str:
        ctx.state["hits"] = ctx.state.get("hits", 0) + 1
        return ctx.endpoint

    wire = make_wire(cluster.urls[0])
    await wire.initialize()
    answers = [
        (await wire.call_tool("where", url=url))["result"]["content"][0]["text"]
        for url in cluster.urls
    ]
    assert answers == cluster.urls
    assert cluster.state["hits"] == 3
    assert [r.endpoint for r in cluster.requests_for(tool="where")] == cluster.urls
    assert cluster.requests_for(url=cluster.urls[1])[0].session_id == wire.session_id


async def test_failover_when_a_node_is_down(
    mcp_mock_cluster: MockClusterFactory, make_wire: Any
) -> None:
    cluster = mcp_mock_cluster(n=2)
    wire = make_wire(cluster.urls[0])
    await wire.initialize()
    cluster.take_down(cluster.urls[0])
    assert cluster.is_down(cluster.urls[0])
    with pytest.raises(httpx.ConnectError):
        await wire.request("ping")
    assert (await wire.call("ping", url=cluster.urls[1]))["result"] == {}
    cluster.bring_up(cluster.urls[0])
    assert (await wire.call("ping"))["result"] == {}


async def test_faults_can_target_one_node(
    mcp_mock_cluster: MockClusterFactory, make_wire: Any
) -> None:
    cluster = mcp_mock_cluster(n=2)
    wire = make_wire(cluster.urls[0])
    await wire.initialize()
    cluster.faults.status(503, url=cluster.urls[1], times=None)
    assert (await wire.request("ping", url=cluster.urls[1])).status_code == 503
    assert (await wire.request("ping", url=cluster.urls[0])).status_code == 200


async def test_resume_session_after_failover(
    mcp_mock_cluster: MockClusterFactory, make_wire: Any
) -> None:
    cluster = mcp_mock_cluster(n=2)

    @cluster.tool(idempotent=True)
    def resume_session(old_session_id: str, ctx: ToolContext) -> str:
        old = ctx.server.get_session(old_session_id)
        assert old is not None
        ctx.session.data.update(old.data)
        return "resumed"

    wire = make_wire(cluster.urls[0])
    await wire.initialize()
    old = wire.session_id
    cluster.sessions[old].data["plan"] = "step 3"
    cluster.expire_session(old)
    await wire.initialize(url=cluster.urls[1])
    await wire.call_tool("resume_session", {"old_session_id": old}, url=cluster.urls[1])
    assert cluster.sessions[wire.session_id].data == {"plan": "step 3"}
    (resume,) = cluster.requests_for(tool="resume_session")
    assert resume.arguments["old_session_id"] == old
    assert resume.endpoint == cluster.urls[1]


async def test_independent_servers_do_not_share_state(
    mcp_mock_factory: MockServerFactory, make_wire: Any
) -> None:
    a = mcp_mock_factory("http://a.test/mcp")
    b = mcp_mock_factory("http://b.test/mcp")
    wire = make_wire(a.url)
    await wire.initialize()
    assert (await wire.request("ping", url=b.url)).status_code == 404
    assert len(a.requests) == 2 and len(b.requests) == 1


def test_clusters_need_a_node(mcp_mock_cluster: MockClusterFactory) -> None:
    with pytest.raises(ValueError, match="at least one"):
        mcp_mock_cluster(n=0)


def test_one_url_one_server(mcp_mock: Any, mcp_mock_factory: MockServerFactory) -> None:
    with pytest.raises(ValueError, match="already served"):
        mcp_mock_factory(mcp_mock.url)
