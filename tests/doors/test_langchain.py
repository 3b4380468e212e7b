"""LangChain: tools from load_tools, driven by langchain-core's GenericFakeChatModel (no LLM).

LangChain-core has no agent executor of its own, so the loop is the standard tool-calling
one: ask the model, run the tool calls it makes, hand back ``ToolMessage``s, repeat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool

from mcp_resilient import ResilientClient
from mcp_resilient.integrations.langchain import load_tools
from tests.rig import ServerCluster

from ._kill import BOUND, answered_by, gated_increment_args, kill_after_commit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


async def run_agent(
    model: GenericFakeChatModel,
    tools: list[BaseTool],
    prompt: str,
    messages: list[BaseMessage] | None = None,
) -> list[BaseMessage]:
    """The tool-calling loop; ``messages`` (if given) is the history it appends to."""
    by_name = {tool.name: tool for tool in tools}
    messages = [] if messages is None else messages
    messages.append(HumanMessage(prompt))
    for _ in range(10):
        reply = await model.ainvoke(messages)
        messages.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            return messages
        for tool_call in reply.tool_calls:
            messages.append(await by_name[tool_call["name"]].ainvoke(tool_call))
    raise AssertionError("the agent did not finish")


async def test_read_only_call_completes_through_a_kill(cluster: ServerCluster) -> None:
    history: list[BaseMessage] = []

    def script() -> Iterator[AIMessage]:
        yield call("whoami", {}, "c1")
        whoami = history[-1]
        assert isinstance(whoami, ToolMessage)
        answered_by(cluster, json.loads(str(whoami.content))).kill()  # mid-run
        yield call("add", {"a": 2, "b": 3}, "c2")
        yield AIMessage(content="done")

    async with ResilientClient(cluster.urls, timeout=BOUND) as client:
        tools = await load_tools(client)
        model = GenericFakeChatModel(messages=script())
        with anyio.fail_after(BOUND):
            await run_agent(model, tools, "add 2 and 3", history)
    added = history[-2]
    assert isinstance(added, ToolMessage) and added.status == "success"
    assert json.loads(str(added.content)) == {"a": 2, "b": 3, "sum": 5}
    assert sum(not server.running for server in cluster) == 1
    assert history[-1].content == "done"


async def test_non_idempotent_call_killed_mid_call_says_it_may_have_run(
    cluster: ServerCluster,
) -> None:
    args = gated_increment_args()
    model = GenericFakeChatModel(
        messages=iter([call("increment", args, "c1"), AIMessage(content="stopped")])
    )
    async with ResilientClient(cluster.urls, timeout=BOUND) as client:
        tools = await load_tools(client)
        messages, runs = await kill_after_commit(
            cluster, args, lambda: run_agent(model, tools, "increment")
        )
    assert runs == 1, "a non-idempotent call ran twice"
    outcome = messages[2]
    assert isinstance(outcome, ToolMessage)
    assert outcome.status == "error"
    assert "may have run" in str(outcome.content)
    assert messages[-1].content == "stopped"


async def test_tools_from_urls_carry_the_schema_and_tool_errors(cluster: ServerCluster) -> None:
    tools = {tool.name: tool for tool in await load_tools(cluster.urls, timeout=BOUND)}
    assert "a" in tools["add"].args and "b" in tools["add"].args
    added = await tools["add"].ainvoke({"a": 1, "b": 2})
    assert added == {"a": 1, "b": 2, "sum": 3}
    failed = await tools["fail"].ainvoke(
        {"name": "fail", "args": {"message": "nope"}, "id": "x", "type": "tool_call"}
    )
    assert isinstance(failed, ToolMessage) and failed.status == "error"
    assert "nope" in str(failed.content)
