"""Server requests and notifications reach the caller's handlers, or get a proper error."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import mcp_types
import pytest

from mcp_resilient import ResilientClient, apply_schema_defaults

from .conftest import URL, FakeServer, sse_event, sse_response

pytestmark = pytest.mark.anyio


def server_asks(method: str, params: dict[str, Any] | None = None) -> Any:
    """A tools/call answer that first sends a server request, then the result."""

    def route(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        ask: dict[str, Any] = {"jsonrpc": "2.0", "id": "srv", "method": method}
        if params is not None:
            ask["params"] = params
        done = {"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}}
        return sse_response(sse_event(ask, id="1"), sse_event(done, id="2"))

    return route


async def reply_to(server: FakeServer, client: ResilientClient) -> dict[str, Any]:
    await client.call_tool("ask")
    with anyio.fail_after(5):
        while not any(m.get("id") == "srv" for m in server.client_messages):
            await anyio.sleep(0.01)
    return next(m for m in server.client_messages if m.get("id") == "srv")


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "default": 30},
        "colour": {"type": "string", "enum": ["red", "blue"], "default": "blue"},
        "subscribed": {"type": "boolean", "default": False},
    },
    "required": ["name"],
}


async def test_elicitation_accept_gets_schema_defaults(server: FakeServer) -> None:
    seen: list[mcp_types.ElicitRequestParams] = []

    async def elicit(params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        seen.append(params)
        return mcp_types.ElicitResult(action="accept", content={"name": "Ada", "age": 36})

    server.on(
        "tools/call",
        server_asks("elicitation/create", {"message": "who?", "requestedSchema": SCHEMA}),
    )
    async with ResilientClient(URL, listen=False, elicitation_handler=elicit) as client:
        reply = await reply_to(server, client)
    assert isinstance(seen[0], mcp_types.ElicitRequestFormParams)
    assert seen[0].message == "who?"
    assert reply["result"] == {
        "action": "accept",
        "content": {"name": "Ada", "age": 36, "colour": "blue", "subscribed": False},
    }
    init = server.posts("initialize")[0][1]
    assert init["params"]["capabilities"]["elicitation"] == {"form": {}}


async def test_elicitation_decline_gets_no_defaults(server: FakeServer) -> None:
    async def elicit(params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        return mcp_types.ElicitResult(action="decline")

    server.on(
        "tools/call", server_asks("elicitation/create", {"message": "?", "requestedSchema": SCHEMA})
    )
    async with ResilientClient(URL, listen=False, elicitation_handler=elicit) as client:
        reply = await reply_to(server, client)
    assert reply["result"] == {"action": "decline"}


def test_apply_schema_defaults_keeps_given_values() -> None:
    assert apply_schema_defaults(SCHEMA, {"age": 1}) == {
        "age": 1,
        "colour": "blue",
        "subscribed": False,
    }
    assert apply_schema_defaults({"type": "object"}, None) == {}


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("elicitation/create", {"message": "?", "requestedSchema": SCHEMA}),
        ("sampling/createMessage", {"messages": [], "maxTokens": 5}),
        ("roots/list", None),
        ("something/else", None),
    ],
)
async def test_no_handler_means_method_not_found(
    server: FakeServer, method: str, params: Any
) -> None:
    server.on("tools/call", server_asks(method, params))
    async with ResilientClient(URL, listen=False) as client:
        reply = await reply_to(server, client)
    assert reply["error"]["code"] == -32601
    assert method in reply["error"]["message"]
    assert server.posts("initialize")[0][1]["params"]["capabilities"] == {}


async def test_sampling_handler(server: FakeServer) -> None:
    async def sample(params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        assert params.max_tokens == 5
        return mcp_types.CreateMessageResult(
            role="assistant", content=mcp_types.TextContent(type="text", text="summary"), model="m1"
        )

    server.on("tools/call", server_asks("sampling/createMessage", {"messages": [], "maxTokens": 5}))
    async with ResilientClient(URL, listen=False, sampling_handler=sample) as client:
        reply = await reply_to(server, client)
    assert reply["result"]["content"] == {"type": "text", "text": "summary"}
    assert reply["result"]["model"] == "m1"


async def test_sampling_handler_with_bad_params_gets_invalid_params(server: FakeServer) -> None:
    async def sample(params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        raise AssertionError("must not be called")

    server.on("tools/call", server_asks("sampling/createMessage", {"maxTokens": "lots"}))
    async with ResilientClient(URL, listen=False, sampling_handler=sample) as client:
        reply = await reply_to(server, client)
    assert reply["error"]["code"] == -32602


async def test_handler_that_raises_gets_internal_error(server: FakeServer) -> None:
    async def sample(params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        raise RuntimeError("model offline")

    server.on("tools/call", server_asks("sampling/createMessage", {"messages": [], "maxTokens": 5}))
    async with ResilientClient(URL, listen=False, sampling_handler=sample) as client:
        reply = await reply_to(server, client)
    assert reply["error"]["code"] == -32603
    assert "model offline" in reply["error"]["message"]


@pytest.mark.parametrize("dynamic", [False, True])
async def test_roots(server: FakeServer, dynamic: bool) -> None:
    roots = [mcp_types.Root(uri="file:///work", name="work")]

    async def provide() -> list[mcp_types.Root]:
        return roots

    server.on("tools/call", server_asks("roots/list"))
    async with ResilientClient(URL, listen=False, roots=provide if dynamic else roots) as client:
        reply = await reply_to(server, client)
    assert reply["result"] == {"roots": [{"uri": "file:///work", "name": "work"}]}
    assert server.posts("initialize")[0][1]["params"]["capabilities"]["roots"] == {
        "listChanged": True
    }


async def test_progress_log_and_list_changed(server: FakeServer) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[mcp_types.LoggingMessageNotificationParams] = []
    changed: list[str] = []
    everything: list[str] = []

    def route(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        token = body["params"]["_meta"]["progressToken"]
        events = [sse_event(id="0")]
        for i in range(1, 4):
            note = {"progressToken": token, "progress": i, "total": 3, "message": f"step {i}"}
            events.append(
                sse_event(
                    {"jsonrpc": "2.0", "method": "notifications/progress", "params": note},
                    id=str(i),
                )
            )
        events.append(
            sse_event(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": "other", "progress": 9},
                },
                id="4",
            )
        )
        events.append(
            sse_event(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/message",
                    "params": {"level": "warning", "data": "careful"},
                },
                id="5",
            )
        )
        events.append(
            sse_event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, id="6")
        )
        events.append(
            sse_event({"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}}, id="7")
        )
        return sse_response(*events)

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async def on_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def on_changed(kind: str) -> None:
        changed.append(kind)

    async def on_any(method: str, params: dict[str, Any] | None) -> None:
        everything.append(method)

    server.on("tools/call", route)
    async with ResilientClient(
        URL,
        listen=False,
        log_handler=on_log,
        list_changed_handler=on_changed,  # type: ignore[arg-type]
        notification_handler=on_any,
    ) as client:
        await client.list_tools()
        assert client.cached_tool("add") is not None
        await client.call_tool("work", progress_handler=on_progress)
        assert client.cached_tool("add") is None  # list_changed invalidated the cache
    assert progress == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]
    assert [(log.level, log.data) for log in logs] == [("warning", "careful")]
    assert changed == ["tools"]
    assert "notifications/message" in everything
    call = server.posts("tools/call")[0][1]
    assert call["params"]["_meta"]["progressToken"] == call["id"]


async def test_default_log_handler_uses_logging(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    def route(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "error", "logger": "db", "data": "boom"},
        }
        return sse_response(
            sse_event(note),
            sse_event({"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}}),
        )

    server.on("tools/call", route)
    with caplog.at_level("INFO", logger="mcp_resilient.server"):
        async with ResilientClient(URL, listen=False) as client:
            await client.call_tool("x")
    assert any(
        r.name == "mcp_resilient.server"
        and r.levelname == "ERROR"
        and "[db] boom" in r.getMessage()
        for r in caplog.records
    )


async def test_events_callback_sees_session_start_and_close(server: FakeServer) -> None:
    from mcp_resilient import Event

    seen: list[Event] = []
    async with ResilientClient(URL, listen=False, on_event=seen.append):
        pass
    assert [e.kind for e in seen] == ["session_started", "closed"]
    assert seen[0].session_id == "sess-1"
    assert seen[0].endpoint == URL


async def test_using_a_closed_client_is_a_clear_error() -> None:
    from mcp_resilient import ClientClosedError

    client = ResilientClient(URL)
    with pytest.raises(ClientClosedError, match="async with"):
        await client.ping()


async def test_roots_list_changed_notification(server: FakeServer) -> None:
    async with ResilientClient(
        URL, listen=False, roots=[mcp_types.Root(uri="file:///a")]
    ) as client:
        await client.send_roots_list_changed()
    sent = [
        m for m in server.client_messages if m.get("method") == "notifications/roots/list_changed"
    ]
    assert sent == [{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]
    notify = next(r for r, b in server.posts("notifications/roots/list_changed"))
    assert notify.headers["mcp-session-id"] == "sess-1"
