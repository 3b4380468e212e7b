"""GET listen streams, DELETE, SSE event ids and resumption with Last-Event-ID."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mcp_resilient.testing import MockMCPServer, SSEEvent, ToolContext, parse_sse

pytestmark = pytest.mark.anyio


async def read_events(response: httpx.Response, count: int) -> list[SSEEvent]:
    """Read a streamed SSE response until ``count`` events (ids count, data or not) arrived."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        found = parse_sse(buffer)
        if len(found) >= count:
            return found
    return parse_sse(buffer)


async def drain(response: httpx.Response) -> tuple[bytes, Exception | None]:
    """Read a streamed body to its end or to the transport error that cut it."""
    buffer = b""
    try:
        async for chunk in response.aiter_bytes():
            buffer += chunk
    except httpx.TransportError as error:
        return buffer, error
    finally:
        await response.aclose()
    return buffer, None


async def test_get_listen_stream_delivers_server_messages(
    wire: Any, mcp_mock: MockMCPServer
) -> None:
    await wire.initialize()
    mcp_mock.notify_tools_list_changed()  # queued before the GET: waits for it
    response = await wire.get()
    try:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        (first,) = await read_events(response, 1)
        assert first.json() == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        assert first.id is not None
        mcp_mock.log("warning", "disk low", logger_name="fs")
        mcp_mock.notify_resource_updated("file:///a")
    finally:
        await response.aclose()
    assert mcp_mock.sessions[wire.session_id].pending_messages == [
        {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "warning", "logger": "fs", "data": "disk low"},
        },
        {
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": "file:///a"},
        },
    ]
    # A new GET picks up what the closed one did not send.
    again = await wire.get()
    try:
        events = await read_events(again, 2)
        assert [e.json()["method"] for e in events] == [
            "notifications/message",
            "notifications/resources/updated",
        ]
    finally:
        await again.aclose()


async def test_server_ping_over_the_listen_stream(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    (ping_id,) = mcp_mock.send_ping()
    response = await wire.get()
    try:
        (event,) = await read_events(response, 1)
    finally:
        await response.aclose()
    assert event.json() == {"jsonrpc": "2.0", "id": ping_id, "method": "ping"}
    answered = await wire.post({"jsonrpc": "2.0", "id": ping_id, "result": {}})
    assert answered.status_code == 202
    assert mcp_mock.client_responses[ping_id]["result"] == {}


async def test_a_tool_can_ping_the_client_on_its_stream(wire: Any, mcp_mock: MockMCPServer) -> None:
    @mcp_mock.tool
    def check(ctx: ToolContext) -> str:
        return ctx.ping_client()

    await wire.initialize()
    ping, result = wire.messages(await wire.request("tools/call", {"name": "check"}))
    assert ping["method"] == "ping"
    assert result["result"]["content"][0]["text"] == ping["id"]


async def test_second_listen_stream_is_a_conflict(wire: Any) -> None:
    await wire.initialize()
    first = await wire.get()
    try:
        second = await wire.get()
        assert second.status_code == 409
        await second.aclose()
    finally:
        await first.aclose()
    third = await wire.get()  # the first one is closed: allowed again
    assert third.status_code == 200
    await third.aclose()


async def test_close_listen_streams_ends_them_gracefully(
    wire: Any, mcp_mock: MockMCPServer
) -> None:
    await wire.initialize()
    response = await wire.get()
    mcp_mock.close_listen_streams()
    assert await response.aread() == b""
    await response.aclose()


@pytest.mark.mcp_mock(get_stream=False)
async def test_get_disabled_is_405(wire: Any) -> None:
    await wire.initialize()
    response = await wire.get()
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, DELETE"
    await response.aclose()


async def test_get_needs_a_session(wire: Any) -> None:
    await wire.initialize()
    sid = wire.session_id
    wire.session_id = None
    missing = await wire.get()
    assert missing.status_code == 400
    wire.session_id = sid + "x"
    unknown = await wire.get()
    assert unknown.status_code == 404
    await missing.aclose()
    await unknown.aclose()


async def test_delete_ends_the_session(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    sid = wire.session_id
    deleted = await wire.client.delete(wire.url, headers={"mcp-session-id": sid})
    assert deleted.status_code == 200
    assert sid not in mcp_mock.sessions
    assert mcp_mock.expired_sessions[sid].expired
    assert (await wire.request("ping")).status_code == 404
    again = await wire.client.delete(wire.url, headers={"mcp-session-id": sid})
    assert again.status_code == 404
    assert (await wire.client.delete(wire.url)).status_code == 400


@pytest.mark.mcp_mock(allow_delete=False)
async def test_delete_disabled_is_405(wire: Any) -> None:
    await wire.initialize()
    response = await wire.client.delete(wire.url, headers={"mcp-session-id": wire.session_id})
    assert response.status_code == 405


async def test_delete_closes_an_open_listen_stream(wire: Any) -> None:
    await wire.initialize()
    response = await wire.get()
    await wire.client.delete(wire.url, headers={"mcp-session-id": wire.session_id})
    assert await response.aread() == b""
    await response.aclose()


def progress_tool(server: MockMCPServer) -> None:
    @server.tool
    def slow(ctx: ToolContext) -> str:
        for step in (1, 2, 3):
            ctx.progress(step, total=3)
        return "finished"


PROGRESS = {"name": "slow", "_meta": {"progressToken": 1}}


async def test_last_event_id_replays_the_rest_after_a_cut(
    wire: Any, mcp_mock: MockMCPServer
) -> None:
    progress_tool(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=2, tool="slow")
    await wire.initialize()
    request = wire.client.build_request(
        "POST", wire.url, json=wire.request_body("tools/call", PROGRESS), headers=wire.headers()
    )
    buffer, error = await drain(await wire.client.send(request, stream=True))
    assert isinstance(error, httpx.RemoteProtocolError)
    seen = parse_sse(buffer)
    assert [e.json()["params"]["progress"] for e in seen] == [1, 2]
    assert mcp_mock.calls_to("slow") == 1  # the tool ran to the end

    resumed = await wire.get(**{"last-event-id": seen[-1].id})
    assert resumed.status_code == 200
    rest = parse_sse(await resumed.aread())
    await resumed.aclose()
    assert rest[0].json()["params"]["progress"] == 3
    assert rest[1].json() == {
        "jsonrpc": "2.0",
        "id": 2,
        "result": {"content": [{"type": "text", "text": "finished"}], "isError": False},
    }
    assert [e.id for e in rest] != [e.id for e in seen]
    # Replaying from the first event gives everything after it again.
    replay = await wire.get(**{"last-event-id": seen[0].id})
    assert len(parse_sse(await replay.aread())) == 3
    await replay.aclose()
    get = mcp_mock.requests_for(http_method="GET")[0]
    assert get.last_event_id == seen[-1].id
    assert get.session_id == wire.session_id


async def test_cut_without_respond_loses_the_answer(wire: Any, mcp_mock: MockMCPServer) -> None:
    progress_tool(mcp_mock)
    await wire.initialize()
    mcp_mock.faults.cut_stream(after_events=1, respond=False, graceful=True)
    response = await wire.request("tools/call", PROGRESS)
    (only,) = wire.events(response)  # a clean EOF after one event, no response
    assert only.json()["method"] == "notifications/progress"
    resumed = await wire.get(**{"last-event-id": only.id})
    assert await resumed.aread() == b""  # nothing more will ever come
    await resumed.aclose()
    assert mcp_mock.calls_to("slow") == 1


async def test_cut_with_read_error(wire: Any, mcp_mock: MockMCPServer) -> None:
    mcp_mock.faults.cut_stream(after_events=0, error="read_error", method="tools/list")
    await wire.initialize()
    with pytest.raises(httpx.ReadError):
        await wire.request("tools/list")


async def test_poll_sends_priming_event_then_closes(wire: Any, mcp_mock: MockMCPServer) -> None:
    progress_tool(mcp_mock)
    mcp_mock.faults.poll(retry_ms=5, tool="slow")
    await wire.initialize()
    response = await wire.request("tools/call", PROGRESS)
    (priming,) = wire.events(response)
    assert priming.data == ""
    assert priming.retry == 5
    assert priming.id is not None
    resumed = await wire.get(**{"last-event-id": priming.id})
    rest = parse_sse(await resumed.aread())
    await resumed.aclose()
    assert [e.json().get("method") for e in rest] == ["notifications/progress"] * 3 + [None]
    assert rest[-1].json()["result"]["content"][0]["text"] == "finished"


@pytest.mark.mcp_mock(sse_priming=True, sse_retry_ms=250)
async def test_priming_and_retry_options(wire: Any) -> None:
    response = await wire.initialize("2025-11-25")
    priming, message = wire.events(response)
    assert (priming.data, priming.retry) == ("", 250)
    assert message.json()["result"]["protocolVersion"] == "2025-11-25"
    old = await wire.initialize("2025-06-18")
    (only,) = wire.events(old)  # no priming event for clients before 2025-11-25
    assert only.retry == 250


async def test_unknown_last_event_id_is_400(wire: Any) -> None:
    await wire.initialize()
    response = await wire.get(**{"last-event-id": "99-1"})
    assert response.status_code == 400
    await response.aclose()


@pytest.mark.mcp_mock(sse_event_ids=False)
async def test_without_event_ids_nothing_resumes(wire: Any) -> None:
    response = await wire.initialize()
    (event,) = wire.events(response)
    assert event.id is None


async def test_listen_stream_cut_and_resume(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    for n in range(3):
        mcp_mock.notify("notifications/message", {"level": "info", "data": n})
    mcp_mock.faults.cut_stream(after_events=1, http_method="GET")
    buffer, error = await drain(await wire.get())
    assert isinstance(error, httpx.RemoteProtocolError)
    (first,) = parse_sse(buffer)
    assert first.json()["params"]["data"] == 0
    resumed = await wire.get(**{"last-event-id": first.id})
    try:
        rest = await read_events(resumed, 2)
    finally:
        await resumed.aclose()
    assert [e.json()["params"]["data"] for e in rest] == [1, 2]
