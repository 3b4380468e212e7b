"""fastmcp.Client(ResilientTransport(urls)): FastMCP's API with our failover, through kills."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError

from mcp_resilient.integrations.fastmcp import ResilientTransport
from tests.rig import ServerCluster

from ._kill import BOUND, answered_by, gated_increment_args, kill_after_commit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_fastmcp_api_and_read_only_call_through_a_kill(cluster: ServerCluster) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with anyio.fail_after(BOUND):
        async with Client(ResilientTransport(cluster.urls, timeout=BOUND)) as client:
            assert "add" in [tool.name for tool in await client.list_tools()]
            await client.ping()
            steps = await client.call_tool(
                "slow_progress", {"steps": 3}, progress_handler=on_progress
            )
            assert steps.data == {"steps": 3, "completed": True}
            assert progress == [1, 2, 3]
            assert "greet" in [p.name for p in await client.list_prompts()]
            who = await client.call_tool("whoami")
            victim = answered_by(cluster, who.structured_content)
            victim.kill()
            added = await client.call_tool("add", {"a": 2, "b": 3})
            assert added.structured_content == {"a": 2, "b": 3, "sum": 5}
            assert not victim.running
            with pytest.raises(ToolError, match="nope"):
                await client.call_tool("fail", {"message": "nope"})


async def test_non_idempotent_call_killed_mid_call_says_it_may_have_run(
    cluster: ServerCluster,
) -> None:
    args = gated_increment_args()
    async with Client(ResilientTransport(cluster.urls, timeout=BOUND)) as client:

        async def call() -> Any:
            try:
                return await client.call_tool("increment", args)
            except ToolError as exc:
                return exc

        outcome, runs = await kill_after_commit(cluster, args, call)
        assert runs == 1, "a non-idempotent call ran twice"
        assert isinstance(outcome, ToolError), outcome
        assert "may have run" in str(outcome)
        # FastMCP's client keeps working afterwards, on the survivor.
        assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content["sum"] == 2
