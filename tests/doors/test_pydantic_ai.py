"""pydantic-ai: an Agent with ResilientToolset, driven by FunctionModel (no LLM), through kills."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from mcp_resilient.integrations.pydantic_ai import ResilientToolset
from tests.rig import ServerCluster

from ._kill import BOUND, answered_by, gated_increment_args, kill_after_commit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def last_tool_outcome(messages: list[ModelMessage]) -> Any:
    """What the model was told about its last tool call (a return, a retry or a failure)."""
    request = messages[-1]
    assert isinstance(request, ModelRequest)
    part = request.parts[-1]
    return getattr(part, "content", part)


async def test_read_only_call_completes_through_a_kill(cluster: ServerCluster) -> None:
    seen: dict[str, Any] = {}

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(m, ModelResponse) for m in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("whoami", {})])
        if step == 1:
            victim = answered_by(cluster, last_tool_outcome(messages))
            seen["victim"] = victim
            victim.kill()  # mid-run: the backend the agent just used dies
            return ModelResponse(parts=[ToolCallPart("add", {"a": 2, "b": 3})])
        seen["added"] = last_tool_outcome(messages)
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(FunctionModel(model), toolsets=[ResilientToolset(cluster.urls, timeout=BOUND)])
    with anyio.fail_after(BOUND):
        result = await agent.run("add 2 and 3")
    assert result.output == "done"
    assert not seen["victim"].running
    assert seen["added"] == {"a": 2, "b": 3, "sum": 5}


async def test_non_idempotent_call_killed_mid_call_says_it_may_have_run(
    cluster: ServerCluster,
) -> None:
    args = gated_increment_args()
    told: dict[str, Any] = {}

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            return ModelResponse(parts=[ToolCallPart("increment", args)])
        told["outcome"] = last_tool_outcome(messages)
        return ModelResponse(parts=[TextPart("stopped")])

    toolset = ResilientToolset(cluster.urls, timeout=BOUND)
    agent = Agent(FunctionModel(model), toolsets=[toolset])
    result, runs = await kill_after_commit(
        cluster, args, lambda: agent.run("increment the counter")
    )
    assert runs == 1, "a non-idempotent call ran twice"
    assert result.output == "stopped"
    assert "may have run" in str(told["outcome"])
