"""The stateless era (2026-07-28) of the fake, seen from a raw httpx client on the wire."""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import httpx
import mcp_types as mt
import pytest

from mcp_resilient import OutcomeUnknownError, ResilientClient, RetryPolicy
from mcp_resilient.testing import (
    ALL_VERSIONS,
    STATELESS_VERSIONS,
    MockMCPServer,
    ToolContext,
    parse_sse,
)

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def meta(version: str = MODERN, **extra: Any) -> dict[str, Any]:
    return {
        mt.PROTOCOL_VERSION_META_KEY: version,
        mt.CLIENT_CAPABILITIES_META_KEY: {},
        mt.CLIENT_INFO_META_KEY: {"name": "wire-test", "version": "1"},
        **extra,
    }


class Stateless:
    """A hand-rolled 2026-07-28 client: every POST carries ``_meta`` and the routing headers."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.next_id = 0

    def body(
        self, method: str, params: dict[str, Any] | None = None, **meta_extra: Any
    ) -> dict[str, Any]:
        self.next_id += 1
        params = {**(params or {}), "_meta": meta(**meta_extra)}
        return {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}

    @staticmethod
    def headers(body: dict[str, Any]) -> dict[str, str]:
        params = body.get("params") or {}
        version = (params.get("_meta") or {}).get(mt.PROTOCOL_VERSION_META_KEY, MODERN)
        headers = {
            "accept": ACCEPT,
            "content-type": "application/json",
            "mcp-protocol-version": version,
            "mcp-method": body["method"],
        }
        name_param = NAMED.get(body["method"])
        if name_param is not None:
            headers["mcp-name"] = params[name_param]
        return headers

    async def post(
        self, body: dict[str, Any], headers: dict[str, str] | None = None, *, url: str | None = None
    ) -> httpx.Response:
        merged = {**self.headers(body), **(headers or {})}
        merged = {k: v for k, v in merged.items() if v != ""}  # "" drops a header
        return await self.client.post(url or self.url, content=json.dumps(body), headers=merged)

    async def request(
        self, method: str, params: dict[str, Any] | None = None, **meta_extra: Any
    ) -> httpx.Response:
        return await self.post(self.body(method, params, **meta_extra))


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    if response.headers["content-type"].startswith("application/json"):
        return [response.json()]
    return [e.json() for e in parse_sse(response.text) if e.data]


def answer(response: httpx.Response) -> dict[str, Any]:
    (found,) = [m for m in messages(response) if "result" in m or "error" in m]
    return found


@pytest.fixture
def both(mcp_mock_factory: Any) -> MockMCPServer:
    """A dual-era server, as FastMCP 4 and the official SDK 2.x serve by default."""
    server: MockMCPServer = mcp_mock_factory("http://both.test/mcp", eras="both")

    @server.tool(read_only=True)
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @server.tool
    def report(steps: int, ctx: ToolContext) -> str:
        for step in range(1, steps + 1):
            ctx.progress(step, steps)
        ctx.log("info", "reported")
        return "done"

    server.add_resource("file:///readme.txt", "hello")
    return server


@pytest.fixture
def modern(http: httpx.AsyncClient, both: MockMCPServer) -> Stateless:
    return Stateless(http, both.url)


# -- eras and their switch ------------------------------------------------------------


def test_eras_option_picks_the_versions() -> None:
    assert MockMCPServer().eras == ("handshake",)
    stateless = MockMCPServer(eras="stateless")
    assert stateless.eras == ("stateless",)
    assert stateless.protocol_versions == STATELESS_VERSIONS
    both = MockMCPServer(eras="both")
    assert both.eras == ("stateless", "handshake")
    assert both.protocol_versions == ALL_VERSIONS
    # protocol_versions alone decides too: naming 2026-07-28 turns the era on.
    assert MockMCPServer(protocol_versions=[MODERN, "2025-06-18"]).eras == (
        "stateless",
        "handshake",
    )
    with pytest.raises(ValueError, match="not in the eras"):
        MockMCPServer(eras="handshake", protocol_versions=[MODERN])
    with pytest.raises(ValueError, match="eras must be"):
        MockMCPServer(eras="modern")  # type: ignore[arg-type]


async def test_discover_lists_versions_capabilities_and_identity(
    modern: Stateless, both: MockMCPServer
) -> None:
    response = await modern.request("server/discover")
    assert response.status_code == 200
    result = answer(response)["result"]
    assert result["supportedVersions"] == [MODERN]  # the per-request versions, as real servers
    assert result["capabilities"]["tools"] == {"listChanged": True}
    assert result["resultType"] == "complete"
    assert result["_meta"][mt.SERVER_INFO_META_KEY] == {"name": "mock-mcp", "version": "0.0.0"}
    assert {"ttlMs", "cacheScope"} <= result.keys()
    (rec,) = both.requests
    assert rec.era == "stateless" and rec.session_id is None
    assert rec.method_header == "server/discover"
    assert rec.meta is not None and rec.meta[mt.PROTOCOL_VERSION_META_KEY] == MODERN


async def test_calls_need_no_session_and_results_carry_the_envelope(
    modern: Stateless, both: MockMCPServer
) -> None:
    listed = answer(await modern.request("tools/list"))["result"]
    assert [t["name"] for t in listed["tools"]] == ["add", "report"]
    assert listed["ttlMs"] == 0 and listed["cacheScope"] == "private"
    response = await modern.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    result = answer(response)["result"]
    assert result["structuredContent"] == {"sum": 3}
    assert result["resultType"] == "complete"
    assert both.sessions == {}
    (run,) = both.tool_executions
    assert run.session_id is None


@pytest.mark.parametrize("mode", ["sse", "json"])
async def test_answers_in_either_format_without_event_ids(
    mcp_mock_factory: Any, http: httpx.AsyncClient, mode: str
) -> None:
    server = mcp_mock_factory(
        "http://fmt.test/mcp", eras="stateless", response_mode=mode, sse_priming=True
    )
    server.add_tool(lambda: "pong", name="check")
    response = await Stateless(http, server.url).request("tools/call", {"name": "check"})
    if mode == "json":
        assert response.headers["content-type"] == "application/json"
    else:
        events = parse_sse(response.text)
        assert [e.id for e in events] == [None]  # no priming event, no ids: nothing to resume
        assert all(e.retry is None for e in events)
    assert answer(response)["result"]["content"] == [{"type": "text", "text": "pong"}]


async def test_progress_on_the_stream_and_logs_only_when_asked(modern: Stateless) -> None:
    params = {"name": "report", "arguments": {"steps": 2}, "_meta": {"progressToken": "t"}}
    body = modern.body("tools/call", params)
    body["params"]["_meta"] = {**meta(), "progressToken": "t"}
    quiet = messages(await modern.post(body))
    assert [m.get("method") for m in quiet] == [
        "notifications/progress",
        "notifications/progress",
        None,
    ]
    body = modern.body("tools/call", {"name": "report", "arguments": {"steps": 0}})
    body["params"]["_meta"][mt.LOG_LEVEL_META_KEY] = "info"
    chatty = messages(await modern.post(body))
    assert [m.get("method") for m in chatty] == ["notifications/message", None]
    body["params"]["_meta"][mt.LOG_LEVEL_META_KEY] = "error"
    filtered = messages(await modern.post(body))
    assert [m.get("method") for m in filtered] == [None]


async def test_notifications_are_accepted_and_dropped(modern: Stateless) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"_meta": meta()}}
    response = await modern.post(body)
    assert response.status_code == 202 and response.content == b""


@pytest.mark.parametrize("method", ["ping", "logging/setLevel", "initialize"])
async def test_methods_the_revision_removed_are_404(modern: Stateless, method: str) -> None:
    response = await modern.request(method, {"level": "info"} if "Level" in method else None)
    assert response.status_code == 404
    assert answer(response)["error"]["code"] == -32601


async def test_missing_resource_is_invalid_params(modern: Stateless) -> None:
    response = await modern.request("resources/read", {"uri": "file:///nope"})
    assert response.status_code == 400
    assert answer(response)["error"]["code"] == -32602
    ok = await modern.request("resources/read", {"uri": "file:///readme.txt"})
    result = answer(ok)["result"]
    assert result["contents"][0]["text"] == "hello"
    assert "ttlMs" in result


async def test_tool_errors_stay_results(modern: Stateless, both: MockMCPServer) -> None:
    response = await modern.request("tools/call", {"name": "add", "arguments": {"a": "x"}})
    assert response.status_code == 200
    assert answer(response)["result"]["isError"] is True


# -- the header and envelope rules (-32020, -32602, -32022) --------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"mcp-method": "tools/list"}, -32020),
        ({"mcp-method": ""}, -32020),
        ({"mcp-name": "other"}, -32020),
        ({"mcp-name": ""}, -32020),
        ({"mcp-protocol-version": "2025-11-25"}, -32022),  # a handshake header: no _meta check
    ],
)
async def test_standard_headers_must_match_the_body(
    mcp_mock_factory: Any, http: httpx.AsyncClient, headers: dict[str, str], code: int
) -> None:
    server = mcp_mock_factory("http://hdr.test/mcp", eras="stateless")
    server.add_tool(lambda: "pong", name="check")
    wire = Stateless(http, server.url)
    response = await wire.post(wire.body("tools/call", {"name": "check"}), headers)
    assert response.status_code == 400
    error = answer(response)["error"]
    assert error["code"] == code, error
    assert server.tool_calls == {}


async def test_version_header_must_equal_meta(modern: Stateless) -> None:
    body = modern.body("tools/list")
    body["params"]["_meta"][mt.PROTOCOL_VERSION_META_KEY] = "2099-01-01"
    response = await modern.post(body, {"mcp-protocol-version": MODERN})
    assert response.status_code == 400
    assert answer(response)["error"]["code"] == -32020


async def test_meta_without_the_header_is_a_header_error(modern: Stateless) -> None:
    response = await modern.post(modern.body("tools/list"), {"mcp-protocol-version": ""})
    assert response.status_code == 400
    assert answer(response)["error"]["code"] == -32020


async def test_missing_envelope_keys_are_invalid_params(modern: Stateless) -> None:
    body = modern.body("tools/list")
    del body["params"]["_meta"][mt.CLIENT_CAPABILITIES_META_KEY]
    response = await modern.post(body)
    assert response.status_code == 400
    error = answer(response)["error"]
    assert error["code"] == -32602 and "clientCapabilities" in error["message"]


async def test_unknown_version_lists_what_the_server_speaks(
    modern: Stateless, both: MockMCPServer
) -> None:
    response = await modern.request("tools/list", version="2099-01-01")
    assert response.status_code == 400
    error = answer(response)["error"]
    assert error["code"] == -32022
    assert error["data"] == {"supported": [MODERN], "requested": "2099-01-01"}
    assert both.requests.last.era == "stateless"


async def test_non_ascii_names_travel_base64(
    mcp_mock_factory: Any, http: httpx.AsyncClient
) -> None:
    server = mcp_mock_factory("http://b64.test/mcp", eras="stateless")
    server.add_tool(lambda: "hej", name="hälsa")
    wire = Stateless(http, server.url)
    encoded = "=?base64?" + base64.b64encode("hälsa".encode()).decode() + "?="
    body = wire.body("tools/call", {"name": "hälsa"})
    response = await wire.post(body, {"mcp-name": encoded})
    assert response.status_code == 200, response.text
    assert server.calls_to("hälsa") == 1
    bad = await wire.post(wire.body("tools/call", {"name": "hälsa"}), {"mcp-name": "=?base64?%%?="})
    assert answer(bad)["error"]["code"] == -32020


@pytest.fixture
def sql(mcp_mock_factory: Any) -> MockMCPServer:
    server: MockMCPServer = mcp_mock_factory("http://sql.test/mcp", eras="stateless")
    schema = {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry"},
            "query": {"type": "string"},
        },
        "required": ["query"],
    }
    server.add_tool(lambda **kw: "ok", name="execute_sql", input_schema=schema)
    return server


@pytest.mark.parametrize(
    ("arguments", "headers", "status"),
    [
        ({"query": "q", "region": "us-west1"}, {"mcp-param-region": "us-west1"}, 200),
        ({"query": "q", "region": "eu"}, {"mcp-param-region": "us"}, 400),
        ({"query": "q", "region": "eu"}, {}, 400),
        ({"query": "q", "limit": 42}, {"mcp-param-limit": "42.0"}, 200),  # numerically equal
        ({"query": "q", "dry": True}, {"mcp-param-dry": "true"}, 200),
        ({"query": "q", "dry": False}, {"mcp-param-dry": "False"}, 400),
        ({"query": "q", "region": "世界"}, {"mcp-param-region": "=?base64?5LiW55WM?="}, 200),
        ({"query": "q"}, {}, 200),  # absent parameter: no header expected
        ({"query": "q", "region": None}, {}, 200),
    ],
)
async def test_tool_parameters_marked_x_mcp_header_are_checked(
    sql: MockMCPServer,
    http: httpx.AsyncClient,
    arguments: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    wire = Stateless(http, sql.url)
    body = wire.body("tools/call", {"name": "execute_sql", "arguments": arguments})
    response = await wire.post(body, headers)
    assert response.status_code == status, response.text
    if status == 400:
        assert answer(response)["error"]["code"] == -32020
        assert sql.calls_to("execute_sql") == 0
    else:
        assert sql.calls_to("execute_sql") == 1


# -- one era only --------------------------------------------------------------------


async def test_handshake_only_server_refuses_stateless_requests_like_a_legacy_server(
    mcp_mock: MockMCPServer, http: httpx.AsyncClient
) -> None:
    """400 with no modern error in the body: what tells an auto client to fall back."""
    response = await Stateless(http, mcp_mock.url).request("server/discover")
    assert response.status_code == 400
    assert answer(response)["error"]["code"] not in (-32020, -32021, -32022)
    assert mcp_mock.requests.last.era == "handshake"


async def test_stateless_only_server_names_its_versions_to_initialize(
    mcp_mock_factory: Any, make_wire: Any
) -> None:
    server = mcp_mock_factory("http://new.test/mcp", eras="stateless")
    wire = make_wire(server.url)
    response = await wire.initialize("2025-11-25")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32022
    assert error["data"] == {"supported": [MODERN], "requested": "2025-11-25"}
    assert MODERN in error["message"]
    assert server.sessions == {}
    for verb in ("GET", "DELETE"):
        refused = await wire.client.request(verb, server.url, headers={"accept": ACCEPT})
        assert refused.status_code == 405
        assert refused.headers["allow"] == "POST"


async def test_dual_server_serves_both_eras_side_by_side(
    both: MockMCPServer, modern: Stateless, make_wire: Any
) -> None:
    legacy = make_wire(both.url)
    assert (await legacy.initialize()).status_code == 200
    assert legacy.session_id in both.sessions
    result = await legacy.call_tool("add", {"a": 2, "b": 2})
    assert result["result"]["structuredContent"] == {"sum": 4}
    assert "resultType" not in result["result"]
    modern_result = answer(
        await modern.request("tools/call", {"name": "add", "arguments": {"a": 3, "b": 3}})
    )
    assert modern_result["result"]["structuredContent"] == {"sum": 6}
    assert [r.era for r in both.requests] == ["handshake", "handshake", "handshake", "stateless"]
    assert [e.session_id for e in both.tool_executions] == [legacy.session_id, None]


# -- scripted faults in the stateless era ---------------------------------------------


async def test_status_fault_then_normal(modern: Stateless, both: MockMCPServer) -> None:
    both.faults.status(503, retry_after=1, tool="add")
    first = await modern.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    second = await modern.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
    assert second.status_code == 200
    assert both.calls_to("add") == 1


async def test_dead_endpoint_refuses_connections(
    mcp_mock_factory: Any, http: httpx.AsyncClient
) -> None:
    server = mcp_mock_factory(["http://n1.test/mcp", "http://n2.test/mcp"], eras="stateless")
    server.add_tool(lambda: "pong", name="check", read_only=True)
    wire = Stateless(http, server.urls[0])
    server.take_down(server.urls[0])
    with pytest.raises(httpx.ConnectError):
        await wire.request("tools/call", {"name": "check"})
    # No session pins a stateless client: the other node answers the same request.
    other = await wire.post(wire.body("tools/call", {"name": "check"}), url=server.urls[1])
    assert other.status_code == 200
    assert [r.faults for r in server.requests] == [["down"], []]


async def test_dropped_response_stream_ran_the_tool(modern: Stateless, both: MockMCPServer) -> None:
    both.faults.cut_stream(after_events=1, tool="report")
    body = modern.body("tools/call", {"name": "report", "arguments": {"steps": 2}})
    body["params"]["_meta"]["progressToken"] = 1
    async with modern.client.stream(
        "POST", modern.url, content=json.dumps(body), headers=modern.headers(body)
    ) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    assert both.calls_to("report") == 1  # the work happened; the answer is lost for good
    assert both.requests.last.faults == ["cut_stream"]


async def test_lost_response_ran_the_tool(modern: Stateless, both: MockMCPServer) -> None:
    both.faults.lose_response(tool="add")
    with pytest.raises(httpx.RemoteProtocolError):
        await modern.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
    assert both.calls_to("add") == 1


# -- a resilient client against the stateless fake --------------------------------------

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01)


@pytest.fixture
def shop(mcp_mock_factory: Any) -> MockMCPServer:
    server: MockMCPServer = mcp_mock_factory(
        ["http://s1.test/mcp", "http://s2.test/mcp"], eras="stateless"
    )

    @server.tool(read_only=True)
    def search(query: str) -> str:
        return f"results for {query}"

    @server.tool
    def place_order(item: str, ctx: ToolContext) -> dict[str, int]:
        orders = ctx.state.setdefault("orders", [])
        orders.append(item)
        return {"order_id": len(orders)}

    return server


async def test_client_rides_through_503s(shop: MockMCPServer) -> None:
    shop.faults.status(503, times=2, tool="place_order")
    async with ResilientClient(shop.urls, retry=FAST) as client:
        result = await client.call_tool("place_order", {"item": "tea"})
        assert client.protocol_version == MODERN and client.session_id is None
    assert result.structured_content == {"order_id": 1}
    assert [r.status for r in shop.requests_for(tool="place_order")] == [503, 503, 200]
    assert shop.calls_to("place_order") == 1


async def test_client_reissues_a_cut_read_only_call_with_a_new_id(shop: MockMCPServer) -> None:
    shop.faults.cut_stream(after_events=0, respond=False, tool="search")
    async with ResilientClient(shop.urls, retry=FAST) as client:
        result = await client.call_tool("search", {"query": "cups"})
    assert result.content == [mt.TextContent(text="results for cups")]
    sent = shop.requests_for(tool="search")
    assert len(sent) == 2 and sent[0].faults == ["cut_stream"]
    assert sent[0].id != sent[1].id  # the spec: re-issued as a new request
    assert shop.calls_to("search") == 2


async def test_client_never_reissues_a_cut_order(shop: MockMCPServer) -> None:
    shop.faults.cut_stream(after_events=0, respond=False, tool="place_order")
    async with ResilientClient(shop.urls, retry=FAST) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.call_tool("place_order", {"item": "tea"})
    assert shop.calls_to("place_order") == 1
    assert len(shop.requests_for(tool="place_order")) == 1


async def test_client_goes_to_the_live_endpoint(shop: MockMCPServer) -> None:
    shop.take_down(shop.urls[0])
    async with ResilientClient(shop.urls, retry=FAST) as client:
        for _ in range(3):
            await client.call_tool("search", {"query": "x"})
    served = {r.endpoint for r in shop.requests_for(tool="search") if r.status == 200}
    assert served == {shop.urls[1]}
    assert shop.calls_to("search") == 3


# -- subscriptions/listen ------------------------------------------------------------------


async def _next_message(lines: Any) -> dict[str, Any]:
    with anyio.fail_after(5):
        async for line in lines:
            if line.startswith("data:") and line[5:].strip():
                message: dict[str, Any] = json.loads(line[5:])
                return message
    raise AssertionError("the listen stream ended")


async def test_listen_stream_delivers_what_the_client_opted_in_to(
    modern: Stateless, both: MockMCPServer
) -> None:
    wanted = {"toolsListChanged": True, "resourceSubscriptions": ["file:///readme.txt"]}
    body = modern.body("subscriptions/listen", {"notifications": {**wanted, "bogus": True}})
    async with modern.client.stream(
        "POST", modern.url, content=json.dumps(body), headers=modern.headers(body)
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        ack = await _next_message(lines)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == wanted  # unknown kinds are not agreed to
        (subscription,) = both.subscriptions
        assert subscription.listen_id == body["id"]

        assert both.log("info", "request-scoped only") == 0  # never on a listen stream
        assert both.notify_prompts_list_changed() == 0  # not opted in to
        assert both.notify_resource_updated("file:///other") == 0
        assert both.send_ping() == []  # no server-to-client requests in this era
        assert both.notify_tools_list_changed() == 1
        assert both.notify_resource_updated("file:///readme.txt") == 1
        changed = await _next_message(lines)
        assert changed["method"] == "notifications/tools/list_changed"
        assert changed["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": body["id"]}
        updated = await _next_message(lines)
        assert updated["params"]["uri"] == "file:///readme.txt"

        both.close_listen_streams()
        final = await _next_message(lines)
        assert final["id"] == body["id"] and final["result"]["resultType"] == "complete"
        assert final["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == body["id"]
        with anyio.fail_after(5):
            rest = [line async for line in lines if line.startswith("data:")]
        assert rest == []
    assert both.subscriptions == []


async def test_client_hears_list_changes_through_listen(mcp_mock_factory: Any) -> None:
    server = mcp_mock_factory("http://listen.test/mcp", eras="stateless")
    server.add_tool(lambda: "pong", name="check", read_only=True)
    changed = anyio.Event()

    async def on_change(kind: str) -> None:
        changed.set()

    async with ResilientClient(server.url, list_changed_handler=on_change, retry=FAST) as client:
        await client.list_tools()
        await wait_for(lambda: bool(server.subscriptions), "the client's listen stream")
        server.add_tool(lambda: "new", name="fresh")
        server.notify_tools_list_changed()
        with anyio.fail_after(5):
            await changed.wait()
        assert "fresh" in [t.name for t in await client.list_tools()]
    listen = server.requests_for("subscriptions/listen")
    assert listen and listen[0].params["notifications"].get("toolsListChanged") is True


async def wait_for(check: Any, what: str, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


# -- input_required (server-to-client requests in the stateless era) ---------------------


async def test_tool_asks_the_client_through_input_required(mcp_mock_factory: Any) -> None:
    server = mcp_mock_factory("http://ask.test/mcp", eras="stateless")
    question = {
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": "Which size?",
            "requestedSchema": {"type": "object", "properties": {"size": {"type": "string"}}},
        },
    }

    @server.tool
    def order(item: str, ctx: ToolContext) -> str:
        answer = ctx.input_responses.get("size")
        if answer is None:
            ctx.input_required({"size": question}, request_state=f"order:{item}")
        assert ctx.request_state == f"order:{item}"
        return f"{answer['content']['size']} {item}"

    asked: list[str] = []

    async def elicit(params: mt.ElicitRequestParams) -> mt.ElicitResult:
        asked.append(params.message)
        return mt.ElicitResult(action="accept", content={"size": "large"})

    async with ResilientClient(server.url, elicitation_handler=elicit, retry=FAST) as client:
        result = await client.call_tool("order", {"item": "tea"})
    assert result.content == [mt.TextContent(text="large tea")]
    assert asked == ["Which size?"]
    first, second = server.requests_for(tool="order")
    assert "inputResponses" not in first.params
    assert second.params["inputResponses"]["size"]["content"] == {"size": "large"}
    assert second.params["requestState"] == "order:tea"
    assert second.id != first.id
    assert server.calls_to("order") == 2  # the tool runs once per round


async def test_input_required_is_stateless_only(mcp_mock: MockMCPServer, wire: Any) -> None:
    @mcp_mock.tool
    def order(ctx: ToolContext) -> str:
        ctx.input_required(request_state="x")

    await wire.initialize()
    result = (await wire.call_tool("order"))["result"]
    assert result["isError"] is True and "stateless era" in result["content"][0]["text"]


@pytest.mark.parametrize("version", [MODERN, "2025-11-25"])
async def test_client_reads_plain_json_answers(mcp_mock_factory: Any, version: str) -> None:
    """Bodies given whole (the fake, respx, httpx.MockTransport) arrive already read."""
    server = mcp_mock_factory("http://json.test/mcp", eras="both", response_mode="json")
    server.add_tool(lambda: "pong", name="check", read_only=True)
    async with ResilientClient(server.url, protocol_version=version, retry=FAST) as client:
        result = await client.call_tool("check", timeout=10)
        assert client.protocol_version == version
    assert result.content == [mt.TextContent(text="pong")]


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
async def test_get_and_delete_in_the_stateless_era_are_405(
    both: MockMCPServer, http: httpx.AsyncClient, verb: str
) -> None:
    headers = {"accept": "text/event-stream", "mcp-protocol-version": MODERN}
    response = await http.request(verb, both.url, headers=headers)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
