"""Every public ResilientClient method against the real example server (a separate process)."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types
import pytest

from mcp_resilient import HANDSHAKE_VERSIONS, Event, RequestTimeoutError, ResilientClient
from tests.rig import ServerProcess

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_connection_facts(mcp_server: ServerProcess) -> None:
    events: list[Event] = []
    async with ResilientClient(
        mcp_server.url, protocol_version=HANDSHAKE, on_event=events.append
    ) as client:
        assert client.endpoint == mcp_server.url
        assert client.session_id and client.session_id.isascii()
        assert client.protocol_version == "2025-11-25"
        assert client.server_info is not None
        assert client.server_info.name == "mcp-resilient-example"
        assert client.server_capabilities is not None
        assert client.server_capabilities.tools is not None
        assert client.instructions and "Stateful example server" in client.instructions
        who = await client.call_tool("whoami")
        assert who.structured_content is not None
        assert who.structured_content["session_id"] == client.session_id
    assert [e.kind for e in events] == ["session_started", "closed"]


async def test_list_tools_with_annotations(mcp_server: ServerProcess) -> None:
    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE) as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    assert {"increment", "get_counter", "set_counter", "add", "resume_session"} <= tools.keys()
    increment, get_counter, set_counter = (
        tools["increment"],
        tools["get_counter"],
        tools["set_counter"],
    )
    assert increment.annotations is not None and not increment.annotations.read_only_hint
    assert not increment.annotations.idempotent_hint
    assert get_counter.annotations is not None and get_counter.annotations.read_only_hint
    assert set_counter.annotations is not None and set_counter.annotations.idempotent_hint


async def test_call_tool_structured_text_and_error(mcp_server: ServerProcess) -> None:
    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE) as client:
        added = await client.call_tool("add", {"a": 1, "b": 2})
        assert added.is_error is False
        assert added.structured_content == {"a": 1, "b": 2, "sum": 3}
        first = await client.call_tool("increment", {"by": 5})
        second = await client.call_tool("increment", {"by": 2})
        assert first.structured_content == {"result": 5}
        assert second.structured_content == {"result": 7}
        failed = await client.call_tool("fail", {"message": "nope"})
        assert failed.is_error is True
        assert isinstance(failed.content[0], mcp_types.TextContent)
        assert "nope" in failed.content[0].text


async def test_progress_handler_sees_every_step_in_order(mcp_server: ServerProcess) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE) as client:
        result = await client.call_tool(
            "slow_progress", {"steps": 10}, progress_handler=on_progress
        )
    assert result.structured_content == {"steps": 10, "completed": True}
    assert seen == [(float(i), 10.0, f"step {i}/10") for i in range(1, 11)]


async def test_resources_templates_and_read(mcp_server: ServerProcess) -> None:
    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE) as client:
        await client.call_tool("add_note", {"text": "first"})
        resources = await client.list_resources()
        templates = await client.list_resource_templates()
        counter = await client.read_resource("state://counter")
        note = await client.read_resource("notes://0")
    assert "state://counter" in [str(r.uri) for r in resources]
    assert "notes://{index}" in [t.uri_template for t in templates]
    assert isinstance(counter.contents[0], mcp_types.TextResourceContents)
    assert '"counter"' in counter.contents[0].text
    assert isinstance(note.contents[0], mcp_types.TextResourceContents)
    assert note.contents[0].text == "first"


async def test_prompts(mcp_server: ServerProcess) -> None:
    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE) as client:
        prompts = await client.list_prompts()
        rendered = await client.get_prompt("greet", {"name": "Ada", "style": "formal"})
    greet = next(p for p in prompts if p.name == "greet")
    assert [a.name for a in greet.arguments or []] == ["name", "style"]
    message = rendered.messages[0]
    assert isinstance(message.content, mcp_types.TextContent)
    assert message.content.text == "Write a formal greeting for Ada."


async def test_ping_and_logging(mcp_server: ServerProcess) -> None:
    logs: list[mcp_types.LoggingMessageNotificationParams] = []

    async def on_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with ResilientClient(
        mcp_server.url, protocol_version=HANDSHAKE, log_handler=on_log
    ) as client:
        await client.ping()
        await client.set_logging_level("debug")
        await client.call_tool("log_something", {"level": "warning", "message": "disk almost full"})
    warnings = [log for log in logs if log.level == "warning"]
    assert len(warnings) == 1
    assert warnings[0].logger == "example"
    # FastMCP wraps the text as {"msg": ..., "extra": ...}.
    assert warnings[0].data["msg"] == "disk almost full"


async def test_elicitation_sampling_and_roots_handlers(mcp_server: ServerProcess) -> None:
    async def elicit(params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        assert params.message == "Your name?"
        return mcp_types.ElicitResult(action="accept", content={"value": "Ada"})

    async def sample(params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        return mcp_types.CreateMessageResult(
            role="assistant", content=mcp_types.TextContent(type="text", text="short"), model="fake"
        )

    roots = [mcp_types.Root(uri="file:///srv/project", name="project")]
    async with ResilientClient(
        mcp_server.url,
        protocol_version=HANDSHAKE,
        elicitation_handler=elicit,
        sampling_handler=sample,
        roots=roots,
    ) as client:
        asked = await client.call_tool("ask_user", {"question": "Your name?"})
        summary = await client.call_tool("summarize", {"text": "a long text"})
        listed = await client.call_tool("list_roots")
        await client.send_roots_list_changed()  # the server accepts it (202)
        roots.append(mcp_types.Root(uri="file:///srv/other", name="other"))
        relisted = await client.call_tool("list_roots")
    assert asked.structured_content == {"action": "accept", "answer": "Ada"}
    assert summary.structured_content == {"result": "short"}
    assert listed.structured_content == {
        "result": [{"uri": "file:///srv/project", "name": "project"}]
    }
    assert relisted.structured_content is not None
    assert [r["name"] for r in relisted.structured_content["result"]] == ["project", "other"]


async def test_server_request_without_handler_gets_an_error(mcp_server: ServerProcess) -> None:
    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE) as client:
        result = await client.call_tool("summarize", {"text": "x"})
    # The server got a JSON-RPC error back and reports the tool as failed.
    assert result.is_error is True


async def test_list_changed_notification(mcp_server: ServerProcess) -> None:
    changed: list[str] = []
    got_it = anyio.Event()

    async def on_changed(kind: Any) -> None:
        changed.append(kind)
        got_it.set()

    async with ResilientClient(
        mcp_server.url, protocol_version=HANDSHAKE, list_changed_handler=on_changed
    ) as client:
        await client.list_tools()
        assert client.cached_tool("echo_it") is None
        await client.call_tool("add_dynamic_tool", {"name": "echo_it"})
        with anyio.fail_after(10):
            await got_it.wait()
        names = [t.name for t in await client.list_tools()]
    assert changed[0] == "tools"
    assert "echo_it" in names


async def test_deadline_is_honoured_and_client_stays_usable(mcp_server: ServerProcess) -> None:
    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE) as client:
        with anyio.fail_after(10), pytest.raises(RequestTimeoutError, match="within 0.5 s"):
            await client.call_tool("sleep", {"seconds": 5}, timeout=0.5)
        assert (await client.call_tool("add", {"a": 2, "b": 2})).structured_content == {
            "a": 2,
            "b": 2,
            "sum": 4,
        }


async def test_close_deletes_the_session(mcp_server: ServerProcess) -> None:
    import httpx

    async with ResilientClient(mcp_server.url, protocol_version=HANDSHAKE, listen=False) as client:
        session_id = client.session_id
        version = client.protocol_version
    assert session_id is not None and version is not None
    async with httpx.AsyncClient() as http:
        response = await http.post(
            mcp_server.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={
                "Accept": "application/json, text/event-stream",
                "Mcp-Session-Id": session_id,
                "MCP-Protocol-Version": version,
            },
        )
    assert response.status_code == 404
