"""Tools, resources and prompts defined in a few lines, called over the wire."""

from __future__ import annotations

from typing import Any

import mcp_types as mt
import pytest

from mcp_resilient.testing import MockMCPServer, RPCError, ToolContext

pytestmark = pytest.mark.anyio


async def test_tools_list_with_annotations(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool(read_only=True)
    def search(query: str, limit: int = 10) -> str:
        """Search the index.

        Longer text that is not part of the description.
        """
        return query

    def delete_file(path: str) -> str:
        return path

    mcp_mock.add_tool(
        delete_file,
        annotations=mt.ToolAnnotations(destructive_hint=True, idempotent_hint=True),
    )
    mcp_mock.add_tool(delete_file, name="rm", annotations={"readOnlyHint": False})

    await wire.initialize()
    tools = (await wire.call("tools/list"))["result"]["tools"]
    by_name = {t["name"]: t for t in tools}
    assert set(by_name) == {"search", "delete_file", "rm"}
    assert by_name["search"]["annotations"] == {"readOnlyHint": True}
    assert by_name["search"]["description"] == "Search the index."
    schema = by_name["search"]["inputSchema"]
    assert schema["type"] == "object"
    assert schema["properties"]["query"] == {"type": "string"}
    assert schema["properties"]["limit"] == {"type": "integer", "default": 10}
    assert schema["required"] == ["query"]
    assert by_name["delete_file"]["annotations"] == {
        "destructiveHint": True,
        "idempotentHint": True,
    }
    assert by_name["rm"]["annotations"] == {"readOnlyHint": False}
    # The same list, as models, for assertions in user tests.
    assert mcp_mock.tools[0].annotations == mt.ToolAnnotations(read_only_hint=True)


@pytest.mark.mcp_mock(response_mode="json")
async def test_tools_call_as_json(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    await wire.initialize()
    response = await wire.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
    assert response.headers["content-type"] == "application/json"
    result = response.json()["result"]
    assert result["structuredContent"] == {"sum": 5}
    assert result["content"] == [{"type": "text", "text": '{"sum": 5}'}]
    assert result["isError"] is False
    assert mcp_mock.calls_to("add") == 1


async def test_tools_call_as_sse(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    async def echo(text: str) -> str:
        return text

    await wire.initialize()
    response = await wire.request("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
    assert response.headers["content-type"] == "text/event-stream"
    (event,) = wire.events(response)
    assert event.id is not None
    message = event.json()
    assert message["id"] == 2
    assert message["result"]["content"] == [{"type": "text", "text": "hi"}]


async def test_progress_and_log_notifications_stream_before_the_response(
    wire: Any, mcp_mock: MockMCPServer
) -> None:
    @mcp_mock.tool
    async def crunch(steps: int, ctx: ToolContext) -> str:
        for step in range(1, steps + 1):
            await ctx.progress(step, total=steps, message=f"step {step}")
        ctx.log("info", {"done": steps})  # awaiting is optional
        return "ok"

    await wire.initialize()
    params = {"name": "crunch", "arguments": {"steps": 2}, "_meta": {"progressToken": "p1"}}
    response = await wire.request("tools/call", params)
    events = wire.events(response)
    assert [e.json().get("method") for e in events] == [
        "notifications/progress",
        "notifications/progress",
        "notifications/message",
        None,
    ]
    ids = [e.id for e in events]
    assert all(ids) and len(set(ids)) == len(ids)
    assert events[1].json()["params"] == {
        "progressToken": "p1",
        "progress": 2.0,
        "total": 2.0,
        "message": "step 2",
    }
    assert events[2].json()["params"] == {"level": "info", "data": {"done": 2}}
    assert events[3].json()["result"]["content"][0]["text"] == "ok"


async def test_progress_needs_a_token_and_logs_follow_set_level(
    wire: Any, mcp_mock: MockMCPServer
) -> None:
    @mcp_mock.tool
    def work(ctx: ToolContext) -> str:
        ctx.progress(1)
        ctx.log("debug", "hidden")
        ctx.log("error", "shown")
        return "done"

    await wire.initialize()
    await wire.call("logging/setLevel", {"level": "warning"})
    response = await wire.request("tools/call", {"name": "work"})
    methods = [m.get("method") for m in wire.messages(response)]
    assert methods == ["notifications/message", None]


@pytest.mark.mcp_mock(response_mode="auto")
async def test_auto_mode_streams_only_when_needed(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    def quiet() -> str:
        return "q"

    @mcp_mock.tool
    def chatty(ctx: ToolContext) -> str:
        ctx.log("info", "hello")
        return "c"

    await wire.initialize()
    quiet_answer = await wire.request("tools/call", {"name": "quiet"})
    chatty_answer = await wire.request("tools/call", {"name": "chatty"})
    assert quiet_answer.headers["content-type"] == "application/json"
    assert chatty_answer.headers["content-type"] == "text/event-stream"


@pytest.mark.mcp_mock(response_mode="json")
async def test_json_mode_drops_stream_messages(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    def chatty(ctx: ToolContext) -> str:
        ctx.log("info", "lost")
        return "c"

    await wire.initialize()
    response = await wire.request("tools/call", {"name": "chatty"})
    assert response.json()["result"]["content"][0]["text"] == "c"


async def test_response_mode_per_tool_and_per_request(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool(response_mode="json")
    def plain() -> str:
        return "p"

    await wire.initialize()
    assert (await wire.request("tools/call", {"name": "plain"})).headers[
        "content-type"
    ] == "application/json"
    mcp_mock.faults.respond_as("json", method="tools/list")
    assert (await wire.request("tools/list")).headers["content-type"] == "application/json"
    assert (await wire.request("tools/list")).headers["content-type"] == "text/event-stream"


async def test_return_values(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    def blocks() -> list[Any]:
        return ["a", mt.ImageContent(data="AAAA", mime_type="image/png")]

    @mcp_mock.tool
    def explicit() -> mt.CallToolResult:
        return mt.CallToolResult(content=[mt.TextContent(text="x")], is_error=True)

    @mcp_mock.tool
    def nothing() -> None:
        return None

    @mcp_mock.tool
    def number() -> int:
        return 42

    await wire.initialize()
    content = (await wire.call_tool("blocks"))["result"]["content"]
    assert content == [
        {"type": "text", "text": "a"},
        {"type": "image", "data": "AAAA", "mimeType": "image/png"},
    ]
    assert (await wire.call_tool("explicit"))["result"]["isError"] is True
    assert (await wire.call_tool("nothing"))["result"]["content"] == []
    assert (await wire.call_tool("number"))["result"]["content"][0]["text"] == "42"


async def test_errors(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    def broken() -> str:
        raise RuntimeError("disk on fire")

    @mcp_mock.tool
    def refuses() -> str:
        raise RPCError(-32001, "nope", {"why": "test"})

    @mcp_mock.tool
    def typed(n: int) -> int:
        return n

    await wire.initialize()
    broken_result = (await wire.call_tool("broken"))["result"]
    assert broken_result["isError"] is True
    assert broken_result["content"][0]["text"] == "disk on fire"
    assert (await wire.call_tool("refuses"))["error"] == {
        "code": -32001,
        "message": "nope",
        "data": {"why": "test"},
    }
    assert (await wire.call_tool("missing"))["error"]["code"] == -32602
    invalid = (await wire.call_tool("typed", {"n": "not a number"}))["result"]
    assert invalid["isError"] is True
    assert invalid["content"][0]["text"].startswith("Invalid arguments: n:")
    # Invalid arguments never reach the function.
    assert mcp_mock.tool_calls == {"broken": 1, "refuses": 1}


async def test_tools_see_session_and_shared_state(wire: Any, mcp_mock: MockMCPServer) -> None:
    seen: list[str | None] = []

    @mcp_mock.tool
    def remember(value: str, ctx: ToolContext) -> str:
        seen.append(ctx.session_id)
        ctx.session.data["value"] = value
        ctx.state["writes"] = ctx.state.get("writes", 0) + 1
        return ctx.endpoint

    await wire.initialize()
    result = await wire.call_tool("remember", {"value": "v"})
    assert result["result"]["content"][0]["text"] == "http://mcp.test/mcp"
    assert seen == [wire.session_id]
    assert mcp_mock.sessions[wire.session_id].data == {"value": "v"}
    assert mcp_mock.state == {"writes": 1}
    execution = mcp_mock.tool_executions[0]
    assert (execution.name, execution.arguments, execution.session_id) == (
        "remember",
        {"value": "v"},
        wire.session_id,
    )


async def test_resume_session_style_tool(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool(idempotent=True)
    def resume_session(old_session_id: str, ctx: ToolContext) -> dict[str, Any]:
        old = ctx.server.get_session(old_session_id)
        if old is None:
            raise RPCError(-32602, "unknown session")
        ctx.session.data.update(old.data)
        return {"resumed": old_session_id}

    await wire.initialize()
    old_id = wire.session_id
    mcp_mock.sessions[old_id].data["cart"] = ["apple"]
    mcp_mock.expire_session(old_id)
    assert (await wire.request("ping")).status_code == 404
    await wire.initialize()
    result = await wire.call_tool("resume_session", {"old_session_id": old_id})
    assert result["result"]["structuredContent"] == {"resumed": old_id}
    assert mcp_mock.sessions[wire.session_id].data == {"cart": ["apple"]}
    (call,) = mcp_mock.requests_for(tool="resume_session")
    assert call.arguments == {"old_session_id": old_id}
    assert call.session_id != old_id


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
async def test_results_carry_no_stateless_era_fields(
    wire: Any, mcp_mock: MockMCPServer, version: str
) -> None:
    mcp_mock.add_tool(lambda: {"n": 1}, name="data")
    await wire.initialize(version)
    listed = (await wire.call("tools/list"))["result"]
    called = (await wire.call_tool("data"))["result"]
    for result in (listed, called):
        assert not {"resultType", "ttlMs", "cacheScope"} & set(result)
    assert called["structuredContent"] == {"n": 1}


@pytest.mark.mcp_mock(page_size=2)
async def test_pagination(wire: Any, mcp_mock: MockMCPServer) -> None:
    for name in "abcde":
        mcp_mock.add_tool(lambda: "x", name=name)
    await wire.initialize()
    names: list[str] = []
    cursor = None
    while True:
        result = (await wire.call("tools/list", {"cursor": cursor} if cursor else None))["result"]
        names += [t["name"] for t in result["tools"]]
        cursor = result.get("nextCursor")
        if cursor is None:
            break
    assert names == list("abcde")
    assert (await wire.call("tools/list", {"cursor": "zz"}))["error"]["code"] == -32602


async def test_resources_and_templates(wire: Any, mcp_mock: MockMCPServer) -> None:
    mcp_mock.add_resource("file:///readme.txt", "hello")
    mcp_mock.add_resource("file:///logo.png", b"\x89PNG", mime_type="image/png")

    @mcp_mock.resource_template("users://{user_id}/profile")
    def profile(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    await wire.initialize()
    listed = (await wire.call("resources/list"))["result"]["resources"]
    assert [r["uri"] for r in listed] == ["file:///readme.txt", "file:///logo.png"]
    templates = (await wire.call("resources/templates/list"))["result"]["resourceTemplates"]
    assert templates[0]["uriTemplate"] == "users://{user_id}/profile"
    text = (await wire.call("resources/read", {"uri": "file:///readme.txt"}))["result"]
    assert text["contents"] == [
        {"uri": "file:///readme.txt", "mimeType": "text/plain", "text": "hello"}
    ]
    blob = (await wire.call("resources/read", {"uri": "file:///logo.png"}))["result"]
    assert blob["contents"][0]["blob"] == "iVBORw=="
    templated = (await wire.call("resources/read", {"uri": "users://42/profile"}))["result"]
    assert templated["contents"][0]["text"] == '{"id": "42"}'
    missing = await wire.call("resources/read", {"uri": "file:///nope"})
    assert missing["error"]["code"] == -32002


async def test_prompts(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.prompt
    def review(code: str, style: str = "terse") -> str:
        """Review some code."""
        return f"Review ({style}): {code}"

    await wire.initialize()
    (prompt,) = (await wire.call("prompts/list"))["result"]["prompts"]
    assert prompt == {
        "name": "review",
        "description": "Review some code.",
        "arguments": [
            {"name": "code", "required": True},
            {"name": "style", "required": False},
        ],
    }
    got = await wire.call("prompts/get", {"name": "review", "arguments": {"code": "x=1"}})
    assert got["result"]["messages"] == [
        {"role": "user", "content": {"type": "text", "text": "Review (terse): x=1"}}
    ]
    assert (await wire.call("prompts/get", {"name": "review"}))["error"]["code"] == -32602


async def test_custom_methods(wire: Any, mcp_mock: MockMCPServer) -> None:
    async def complete(params: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return {"completion": {"values": [params["argument"]["value"] + "!"]}}

    mcp_mock.add_method("completion/complete", complete)
    await wire.initialize()
    result = await wire.call(
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": "v"}},
    )
    assert result["result"]["completion"]["values"] == ["v!"]
