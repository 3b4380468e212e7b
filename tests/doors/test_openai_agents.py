"""OpenAI Agents SDK: an Agent with ResilientMCPServer, driven by its ScriptedModel, through kills."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from agents import Agent, RunConfig, Runner
from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call

from mcp_resilient.integrations.openai_agents import ResilientMCPServer
from tests.rig import ServerCluster, ServerProcess

from ._kill import BOUND, answered_by, gated_increment_args, kill_after_commit

pytestmark = pytest.mark.anyio

NO_TRACING = RunConfig(tracing_disabled=True)  # the SDK's trace export would go to the network


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def last_tool_output(call: ModelCall) -> str:
    outputs = [item for item in call.input if isinstance(item, dict) and "output" in item]
    return str(outputs[-1]["output"])


def by_pid(cluster: ServerCluster, text: str) -> ServerProcess:
    match = re.search(r'"pid":\s*(\d+)', text)
    assert match, text
    return answered_by(cluster, {"pid": int(match.group(1))})


async def test_read_only_call_completes_through_a_kill(cluster: ServerCluster) -> None:
    seen: dict[str, Any] = {}

    def kill_then_add(call: ModelCall) -> Any:
        victim = by_pid(cluster, last_tool_output(call))
        seen["victim"] = victim
        victim.kill()  # mid-run: the backend the agent just used dies
        return [function_call("add", {"a": 2, "b": 3}, call_id="c2")]

    def finish(call: ModelCall) -> Any:
        seen["added"] = last_tool_output(call)
        return [assistant_message("done")]

    model = ScriptedModel(
        [
            [function_call("whoami", {}, call_id="c1")],
            ModelStep.respond(kill_then_add),
            ModelStep.respond(finish),
        ]
    )
    async with ResilientMCPServer(cluster.urls, timeout=BOUND) as server:
        agent = Agent(name="adder", model=model, mcp_servers=[server])
        with anyio.fail_after(BOUND):
            result = await Runner.run(agent, "add 2 and 3", run_config=NO_TRACING)
    assert result.final_output == "done"
    assert not seen["victim"].running
    assert '"sum":5' in seen["added"].replace(" ", "")
    model.assert_complete()


async def test_non_idempotent_call_killed_mid_call_says_it_may_have_run(
    cluster: ServerCluster,
) -> None:
    args = gated_increment_args()
    told: dict[str, str] = {}

    def finish(call: ModelCall) -> Any:
        told["outcome"] = last_tool_output(call)
        return [assistant_message("stopped")]

    model = ScriptedModel(
        [[function_call("increment", args, call_id="c1")], ModelStep.respond(finish)]
    )
    async with ResilientMCPServer(cluster.urls, timeout=BOUND) as server:
        agent = Agent(name="counter", model=model, mcp_servers=[server])
        result, runs = await kill_after_commit(
            cluster,
            args,
            lambda: Runner.run(agent, "increment", run_config=NO_TRACING),
        )
    assert runs == 1, "a non-idempotent call ran twice"
    assert result.final_output == "stopped"
    assert "may have run" in told["outcome"]
