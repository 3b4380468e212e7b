"""Each handshake-era wire rule, pinned by looking at the actual HTTP requests."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
import respx

from mcp_resilient import (
    ResilientClient,
    ServerError,
    SessionExpiredError,
    UnsupportedProtocolVersionError,
)

from .conftest import SESSION, URL, FakeServer, rpc_result, sse_event, sse_response

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.usefixtures("http_path"),  # every test on both transport paths
]


async def test_post_headers_and_body(server: FakeServer) -> None:
    async with ResilientClient(URL) as client:
        await client.call_tool("add", {"a": 1, "b": 2})
    for request, body in server.posts():
        assert request.headers.get_list("accept") == ["application/json, text/event-stream"]
        assert request.headers["content-type"] == "application/json"
        assert body["jsonrpc"] == "2.0"
        assert isinstance(body, dict)  # one message per POST, never a batch


async def test_initialize_then_session_and_version_headers_on_every_later_request(
    server: FakeServer,
) -> None:
    # Pinned: the handshake wire itself ("auto" probes server/discover first).
    async with ResilientClient(URL, protocol_version="2025-11-25") as client:
        assert client.session_id == SESSION
        assert client.protocol_version == "2025-11-25"
        await client.list_tools()
        await client.ping()
    first, later = server.requests[0], server.requests[1:]
    assert json.loads(first.content)["method"] == "initialize"
    assert "mcp-session-id" not in first.headers
    assert "mcp-protocol-version" not in first.headers
    assert later, "expected requests after initialize"
    for request in later:
        assert request.headers["mcp-session-id"] == SESSION, request
        assert request.headers["mcp-protocol-version"] == "2025-11-25", request


async def test_initialize_offers_newest_version_and_client_info(server: FakeServer) -> None:
    async with ResilientClient(URL):
        pass
    _, body = server.posts("initialize")[0]
    assert body["params"]["protocolVersion"] == "2025-11-25"
    assert body["params"]["clientInfo"]["name"] == "mcp-resilient"
    assert body["params"]["capabilities"] == {}


async def test_initialized_notification_follows_initialize_and_gets_202(server: FakeServer) -> None:
    async with ResilientClient(URL, protocol_version="2025-11-25"):
        pass
    methods = [json.loads(r.content).get("method") for r in server.requests if r.method == "POST"]
    assert methods[:2] == ["initialize", "notifications/initialized"]
    assert server.client_messages[0] == {"jsonrpc": "2.0", "method": "notifications/initialized"}


async def test_no_session_id_means_no_session_header(server: FakeServer) -> None:
    server.session_id = None
    async with ResilientClient(URL, listen=False) as client:
        assert client.session_id is None
        await client.ping()
    for request in server.requests[1:]:
        assert "mcp-session-id" not in request.headers


async def test_get_listen_stream_has_exactly_one_accept_and_405_is_normal(
    server: FakeServer,
) -> None:
    opened = anyio.Event()

    def on_get(request: httpx.Request) -> httpx.Response:
        opened.set()
        return httpx.Response(405)

    server.get_answer = on_get
    async with ResilientClient(URL) as client:
        with anyio.fail_after(5):
            await opened.wait()
        await client.ping()  # still fine after the 405
    gets = server.of_method("GET")
    assert len(gets) == 1, "405 means no stream: the client must not retry it"
    get = gets[0]
    assert get.headers.get_list("accept") == ["text/event-stream"]
    assert get.headers["mcp-session-id"] == SESSION
    assert get.headers["mcp-protocol-version"] == "2025-11-25"
    # The GET comes after notifications/initialized.
    order = [
        (r.method, json.loads(r.content).get("method") if r.content else None)
        for r in server.requests
    ]
    assert order.index(("GET", None)) > order.index(("POST", "notifications/initialized"))


async def test_listen_disabled_sends_no_get(server: FakeServer) -> None:
    async with ResilientClient(URL, listen=False) as client:
        await client.ping()
    assert server.of_method("GET") == []


async def test_delete_on_close_with_session_and_405_tolerated(server: FakeServer) -> None:
    server.delete_status = 405
    async with ResilientClient(URL, listen=False):
        pass
    deletes = server.of_method("DELETE")
    assert len(deletes) == 1
    assert deletes[0].headers["mcp-session-id"] == SESSION
    assert deletes[0].headers["mcp-protocol-version"] == "2025-11-25"


@pytest.mark.parametrize("bad", ["has space", "del\x7fchar", "tab\there", "", "x" * 2000])
async def test_invalid_session_id_is_rejected(server: FakeServer, bad: str) -> None:
    from mcp_resilient import ProtocolError

    def initialize(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        response = rpc_result(
            body["id"],
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "serverInfo": {"name": "f", "version": "1"},
            },
        )
        response.headers["mcp-session-id"] = bad.encode("latin-1", "replace").decode("latin-1")
        return response

    server.on("initialize", initialize)
    with pytest.raises(ProtocolError, match="Mcp-Session-Id"):
        async with ResilientClient(URL, listen=False):
            pass


async def test_json_and_sse_answers_both_work(server: FakeServer) -> None:
    def sse_call(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return sse_response(
            sse_event(id="e0"),  # priming event: id, empty data
            ": a comment\n\n",
            sse_event(
                {
                    "jsonrpc": "2.0",
                    "id": body["id"],
                    "result": {"content": [{"type": "text", "text": "sse"}]},
                },
                id="e1",
            ),
        )

    async with ResilientClient(URL, listen=False) as client:
        json_result = await client.call_tool("add", {"a": 2, "b": 3})
        server.on("tools/call", sse_call)
        sse_result = await client.call_tool("add", {})
    assert json_result.structured_content == {"result": 5}
    assert sse_result.content[0].text == "sse"  # type: ignore[union-attr]


async def test_server_ping_on_post_stream_is_answered(server: FakeServer) -> None:
    def call(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return sse_response(
            sse_event({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"}, id="1"),
            sse_event({"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}}, id="2"),
        )

    server.on("tools/call", call)
    async with ResilientClient(URL, listen=False) as client:
        await client.call_tool("x")
        with anyio.fail_after(5):
            while not any(m.get("id") == "srv-1" for m in server.client_messages):
                await anyio.sleep(0.01)
    reply = next(m for m in server.client_messages if m.get("id") == "srv-1")
    assert reply == {"jsonrpc": "2.0", "id": "srv-1", "result": {}}


async def test_server_ping_on_get_stream_is_answered(server: FakeServer) -> None:
    served = False

    def on_get(request: httpx.Request) -> httpx.Response:
        nonlocal served
        if served:
            return httpx.Response(405)
        served = True
        return sse_response(sse_event({"jsonrpc": "2.0", "id": 77, "method": "ping"}, id="g1"))

    server.get_answer = on_get
    async with ResilientClient(URL):
        with anyio.fail_after(5):
            while not any(m.get("id") == 77 for m in server.client_messages):
                await anyio.sleep(0.01)
    assert {"jsonrpc": "2.0", "id": 77, "result": {}} in server.client_messages


async def test_caller_cancellation_sends_cancelled_and_ignores_late_answer(
    server: FakeServer,
) -> None:
    release = anyio.Event()
    started = anyio.Event()

    async def slow(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if body["params"]["name"] != "slow":
            return server.default("tools/call", body)
        started.set()
        await release.wait()
        return rpc_result(body["id"], {"content": []})

    server.on("tools/call", slow)
    async with ResilientClient(URL, listen=False) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "slow")
            with anyio.fail_after(5):
                await started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            while not any(
                m.get("method") == "notifications/cancelled" for m in server.client_messages
            ):
                await anyio.sleep(0.01)
        release.set()  # the late answer arrives nowhere
        result = await client.call_tool("add", {"a": 1})
        assert result.structured_content == {"result": 1}
    call_id = server.posts("tools/call")[0][1]["id"]
    cancel = next(m for m in server.client_messages if m.get("method") == "notifications/cancelled")
    assert cancel["params"]["requestId"] == call_id


async def test_timeout_raises_within_deadline_and_sends_cancelled(server: FakeServer) -> None:
    from mcp_resilient import RequestTimeoutError

    async def never(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if body["params"]["name"] != "never":
            return server.default("tools/call", body)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    server.on("tools/call", never)
    async with ResilientClient(URL, listen=False) as client:
        with anyio.fail_after(10):  # a generous outer bound: the 0.2 s deadline must fire first
            with pytest.raises(
                RequestTimeoutError, match=r"tools/call.* did not complete within 0.2 s"
            ):
                await client.call_tool("never", timeout=0.2)
        with anyio.fail_after(5):
            while not any(
                m.get("method") == "notifications/cancelled" for m in server.client_messages
            ):
                await anyio.sleep(0.01)
        assert (await client.call_tool("add", {"a": 4})).structured_content == {"result": 4}


async def test_initialize_is_never_cancelled_by_notification(server: FakeServer) -> None:
    async def never(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    server.on("initialize", never)
    from mcp_resilient import RequestTimeoutError

    with pytest.raises(RequestTimeoutError):
        async with ResilientClient(URL, timeout=0.2, listen=False):
            pass
    assert not [m for m in server.client_messages if m.get("method") == "notifications/cancelled"]


async def test_older_version_chosen_by_server_is_used(server: FakeServer) -> None:
    server.version = "2025-06-18"
    async with ResilientClient(URL, listen=False) as client:
        assert client.protocol_version == "2025-06-18"
        await client.ping()
    assert server.requests[-2].headers["mcp-protocol-version"] == "2025-06-18"


async def test_unknown_version_fails_clearly_and_ends_session(server: FakeServer) -> None:
    server.version = "2024-01-01"
    with pytest.raises(UnsupportedProtocolVersionError, match="2024-01-01") as info:
        async with ResilientClient(URL, listen=False):
            pass
    assert "2025-11-25" in str(info.value)
    assert len(server.of_method("DELETE")) == 1


async def test_offered_version_is_configurable(server: FakeServer) -> None:
    server.version = "2025-03-26"
    async with ResilientClient(URL, protocol_version="2025-03-26", listen=False) as client:
        assert client.protocol_version == "2025-03-26"
    assert server.posts("initialize")[0][1]["params"]["protocolVersion"] == "2025-03-26"
    with pytest.raises(ValueError, match="protocol_version"):
        ResilientClient(URL, protocol_version="1999-01-01")


async def test_404_with_session_id_is_session_expired(server: FakeServer) -> None:
    server.on(
        "tools/call",
        lambda body, request: httpx.Response(
            404, json={"error": {"code": -32600, "message": "Session not found"}}
        ),
    )
    from mcp_resilient import NO_RETRY

    async with ResilientClient(URL, listen=False, retry=NO_RETRY) as client:
        with pytest.raises(SessionExpiredError) as info:
            await client.call_tool("x")
    assert info.value.status_code == 404
    assert info.value.session_id == SESSION
    assert info.value.endpoint == URL


async def test_jsonrpc_error_keeps_code_and_data(server: FakeServer) -> None:
    from .conftest import rpc_error

    server.on(
        "tools/call",
        lambda body, request: rpc_error(body["id"], -32602, "bad args", {"field": "a"}),
    )
    async with ResilientClient(URL, listen=False) as client:
        with pytest.raises(ServerError) as info:
            await client.call_tool("add", {"a": "x"})
    assert info.value.code == -32602
    assert info.value.data == {"field": "a"}
    assert info.value.method == "tools/call"
    assert "bad args" in str(info.value)


async def test_headers_and_auth_go_on_every_request(server: FakeServer) -> None:
    class Bearer(httpx.Auth):
        def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
            request.headers["Authorization"] = "Bearer t0ken"
            yield request

    async with ResilientClient(URL, headers={"X-Team": "blue"}, auth=Bearer()) as client:
        await client.ping()
    for request in server.requests:
        assert request.headers["x-team"] == "blue"
        assert request.headers["authorization"] == "Bearer t0ken"


async def test_bring_your_own_http_client_is_not_closed(server: FakeServer) -> None:
    async with httpx.AsyncClient() as http:
        async with ResilientClient(URL, http_client=http, listen=False) as client:
            await client.ping()
        assert not http.is_closed


async def test_tool_list_pagination_collects_all_pages(server: FakeServer) -> None:
    def pages(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        cursor = (body.get("params") or {}).get("cursor")
        if cursor is None:
            return rpc_result(
                body["id"],
                {"tools": [{"name": "a", "inputSchema": {"type": "object"}}], "nextCursor": "p2"},
            )
        return rpc_result(body["id"], {"tools": [{"name": "b", "inputSchema": {"type": "object"}}]})

    server.on("tools/list", pages)
    async with ResilientClient(URL, listen=False) as client:
        tools = await client.list_tools()
    assert [t.name for t in tools] == ["a", "b"]


async def test_repeated_cursor_is_a_protocol_error(server: FakeServer) -> None:
    from mcp_resilient import ProtocolError

    server.on(
        "tools/list",
        lambda body, request: rpc_result(body["id"], {"tools": [], "nextCursor": "same"}),
    )
    async with ResilientClient(URL, listen=False) as client:
        with pytest.raises(ProtocolError, match="repeated pagination cursor"):
            await client.list_tools()


def test_session_id_validation_rule() -> None:
    from mcp_resilient._eras._handshake import valid_session_id

    assert valid_session_id("abc-DEF_123~!")
    assert valid_session_id("".join(chr(c) for c in range(0x21, 0x7F)))
    for bad in ("", " lead", "caf\u00e9", "nul\x00", "x" * 1025, "line\nbreak"):
        assert not valid_session_id(bad), bad


async def test_errors_carry_the_real_request_id(server: FakeServer) -> None:
    """A server's JSON-RPC error, and the outcome-unknown it leads to, name the request."""
    from mcp_resilient import OutcomeUnknownError
    from mcp_resilient._classify import LEDGER_STARTED_NOT_FINISHED

    from .conftest import rpc_error

    sent: list[Any] = []

    def answer(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        sent.append(body["id"])
        return rpc_error(body["id"], LEDGER_STARTED_NOT_FINISHED, "started, never finished")

    server.on("tools/call", answer)
    async with ResilientClient(URL, listen=False) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.call_tool("add", {"a": 1}, idempotent=False)
    assert info.value.request_id == sent[-1] is not None
    assert f"(request id {sent[-1]})" in str(info.value)


async def test_each_path_is_the_one_that_carries_the_calls(
    server: FakeServer, http_path: str
) -> None:
    """The parametrization is real: the lean path sends on httpcore, the other on httpx."""
    from mcp_resilient._transports import CoreTransport, HttpxTransport

    async with ResilientClient(URL, listen=False) as client:
        assert await client.call_tool("add", {"a": 2, "b": 3})
        transport = client._recovery.transport
    expected = CoreTransport if http_path == "lean" else HttpxTransport
    assert type(transport) is expected
    request = server.posts("tools/call")[0][0]
    # The same request on both paths, down to httpx's default headers.
    assert request.headers["user-agent"].startswith("python-httpx/")
    assert request.headers["connection"] == "keep-alive"
    assert request.headers["host"] == "mcp.test"
    assert request.headers["content-length"] == str(len(request.content))


async def test_httpx_level_test_doubles_still_see_every_request() -> None:
    """respx's ``httpx`` mocker (and mcp_resilient.testing) reroute httpx's transports: a
    client that would send on httpcore directly must notice and go through httpx."""
    fake = FakeServer()
    with respx.mock(using="httpx", assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=fake)
        async with ResilientClient(URL, listen=False, timeout=5) as client:
            assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content
    assert [body["method"] for _, body in fake.posts()][-1] == "tools/call"
