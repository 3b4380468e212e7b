"""Adapters given an open ResilientClient borrow it: they never close it, and refuse options."""

from __future__ import annotations

import pytest
from agents import Agent, RunConfig, Runner
from agents.testing import ScriptedModel, assistant_message, function_call
from fastmcp import Client
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.models.test import TestModel

from mcp_resilient import ResilientClient
from mcp_resilient.integrations.fastmcp import ResilientTransport
from mcp_resilient.integrations.langchain import load_tools
from mcp_resilient.integrations.openai_agents import ResilientMCPServer
from mcp_resilient.integrations.pydantic_ai import ResilientToolset
from tests.rig import ServerProcess

from ._kill import BOUND

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_borrowed_client_stays_open(mcp_server: ServerProcess) -> None:
    async with ResilientClient(mcp_server.url, timeout=BOUND) as client:
        toolset = ResilientToolset(client)
        agent = PydanticAgent(TestModel(call_tools=["add"]), toolsets=[toolset])
        assert '"sum":' in (await agent.run("add")).output.replace(" ", "")

        model = ScriptedModel(
            [[function_call("add", {"a": 1, "b": 2}, call_id="c1")], [assistant_message("3")]]
        )
        async with ResilientMCPServer(client) as server:
            agent2 = Agent(name="a", model=model, mcp_servers=[server])
            run = await Runner.run(agent2, "add", run_config=RunConfig(tracing_disabled=True))
            assert run.final_output == "3"

        async with Client(ResilientTransport(client)) as fast:
            assert (await fast.call_tool("add", {"a": 1, "b": 2})).data is not None

        tools = {tool.name: tool for tool in await load_tools(client)}
        assert (await tools["add"].ainvoke({"a": 1, "b": 2}))["sum"] == 3

        await client.ping()  # still open: no adapter closed what it borrowed


def test_options_go_to_the_client_not_the_adapter() -> None:
    client = ResilientClient("http://127.0.0.1:8000/mcp")
    with pytest.raises(TypeError):
        ResilientToolset(client, timeout=5)
    with pytest.raises(TypeError):
        ResilientMCPServer(client, timeout=5)
    with pytest.raises(TypeError):
        ResilientTransport(client, timeout=5)
    with pytest.raises(ValueError):
        ResilientToolset(["ftp://127.0.0.1/mcp"])
