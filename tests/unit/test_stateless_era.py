"""The 2026-07-28 era on the wire: ``_meta``, headers, discovery, MRTR, streams, routing.

Each test runs the public client against ``StatelessFake`` (respx) and checks what went
over the wire. Every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import mcp_types
import pytest
import respx

from mcp_resilient import (
    OutcomeUnknownError,
    ProtocolError,
    ResilientClient,
    RetryPolicy,
    UnsupportedProtocolVersionError,
)
from tests.unit.conftest import sse_event, sse_response
from tests.unit.stateless_fake import (
    META_CAPABILITIES,
    META_INFO,
    META_VERSION,
    VERSION,
    StatelessFake,
    error,
    result,
)

pytestmark = pytest.mark.anyio

URL = "http://s.test/mcp"
URL2 = "http://s2.test/mcp"
LIMIT = 10
FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[StatelessFake]:
    server = StatelessFake(URL)
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=server)
        yield server


def b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


# -- every request ------------------------------------------------------------------------


async def test_every_request_carries_meta_and_headers_and_no_session(fake: StatelessFake) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, protocol_version=VERSION) as client:
            assert client.protocol_version == VERSION
            assert client.session_id is None
            assert client.server_info is not None and client.server_info.name == "fake"
            assert client.instructions == "be nice"
            await client.list_tools()
            await client.call_tool("add", {"a": 1, "b": 2}, meta={"trace": "t1"})
    posts = fake.posts()
    assert [body["method"] for _, body in posts] == ["server/discover", "tools/list", "tools/call"]
    for request, body in posts:
        meta = body["params"]["_meta"]
        assert meta[META_VERSION] == VERSION == request.headers["mcp-protocol-version"]
        assert meta[META_INFO]["name"] == "mcp-resilient"
        assert meta[META_CAPABILITIES] == {}
        assert request.headers["mcp-method"] == body["method"]
        assert "mcp-session-id" not in request.headers
    call_request, call = posts[-1]
    assert call_request.headers["mcp-name"] == "add"
    assert call["params"]["_meta"]["trace"] == "t1"  # the caller's _meta is kept
    ids = [body["id"] for _, body in posts]
    assert len(set(ids)) == len(ids)
    # No GET listen stream, no DELETE on close, no initialize.
    assert [r.method for r in fake.requests] == ["POST"] * 3


async def test_names_that_are_not_plain_ascii_go_base64(fake: StatelessFake) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            await client.call_tool("grüße", {})
            await client.call_tool(" padded", {})
            await client.read_resource("file:///a%20b.txt")
            await client.get_prompt("=?base64?x?=")
    headers = [r.headers["mcp-name"] for r, _ in fake.posts()[1:]]
    assert headers == [b64("grüße"), b64(" padded"), "file:///a%20b.txt", b64("=?base64?x?=")]


async def test_x_mcp_header_arguments_become_param_headers(fake: StatelessFake) -> None:
    fake.tools = [
        {
            "name": "q",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "region": {"type": "string", "x-mcp-header": "Region"},
                    "n": {"type": "integer", "x-mcp-header": "N"},
                    "flag": {"type": "boolean", "x-mcp-header": "Flag"},
                    "gone": {"type": "string", "x-mcp-header": "Gone"},
                    "greeting": {"type": "string", "x-mcp-header": "Greeting"},
                    "where": {
                        "type": "object",
                        "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}},
                    },
                    "query": {"type": "string"},
                },
            },
        }
    ]
    arguments = {
        "region": "us-west1",
        "n": -7,
        "flag": False,
        "gone": None,
        "greeting": "Hello, 世界",
        "where": {"zone": "b"},
        "query": "SELECT 1",
    }
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            await client.list_tools()
            await client.call_tool("q", arguments)
    request, body = fake.posts("tools/call")[0]
    params = {
        k.lower(): v for k, v in request.headers.items() if k.lower().startswith("mcp-param-")
    }
    assert params == {
        "mcp-param-region": "us-west1",
        "mcp-param-n": "-7",
        "mcp-param-flag": "false",
        "mcp-param-greeting": "=?base64?SGVsbG8sIOS4lueVjA==?=",
        "mcp-param-zone": "b",
    }
    assert body["params"]["arguments"] == arguments  # the body is untouched


async def test_tools_with_invalid_x_mcp_header_are_left_out(fake: StatelessFake) -> None:
    def tool(name: str, prop: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "inputSchema": {"type": "object", "properties": {"v": prop}}}

    fake.tools = [
        tool("ok", {"type": "string", "x-mcp-header": "Region"}),
        tool("number", {"type": "number", "x-mcp-header": "Score"}),
        tool("empty", {"type": "string", "x-mcp-header": ""}),
        tool("space", {"type": "string", "x-mcp-header": "My Region"}),
        tool("array", {"type": "array", "items": {"type": "string", "x-mcp-header": "I"}}),
        {
            "name": "twice",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "a": {"type": "string", "x-mcp-header": "Dup"},
                    "b": {"type": "string", "x-mcp-header": "dup"},
                },
            },
        },
    ]
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            names = [t.name for t in await client.list_tools()]
    assert names == ["ok"]


async def test_json_schemas_pass_through_as_sent(fake: StatelessFake) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"id": {"$anchor": "idDef", "type": "string"}},
        "properties": {"id": {"$ref": "#/$defs/id"}, "p": {"$ref": "http://s.test/canary"}},
        "if": {"required": ["id"]},
        "then": {"minProperties": 1},
        "else": {"maxProperties": 0},
        "additionalProperties": False,
        "unevaluatedProperties": False,
    }
    fake.tools = [{"name": "lookup", "inputSchema": schema}]
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            (tool,) = await client.list_tools()
    assert tool.input_schema == schema
    assert not [r for r in fake.requests if r.url.path == "/canary"]


async def test_log_level_rides_in_meta_and_ping_is_discover(fake: StatelessFake) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            await client.set_logging_level("debug")
            await client.ping()
            await client.call_tool("add", {})
    methods = [body["method"] for _, body in fake.posts()]
    assert methods == ["server/discover", "server/discover", "tools/call"]
    _, call = fake.posts("tools/call")[0]
    assert call["params"]["_meta"]["io.modelcontextprotocol/logLevel"] == "debug"


# -- discovery and version errors --------------------------------------------------------


async def test_unsupported_version_is_retried_once_with_a_mutual_version(
    fake: StatelessFake,
) -> None:
    rejected = 0

    def once(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        nonlocal rejected
        if rejected == 0:
            rejected += 1
            data = {"supported": ["2099-01-01", VERSION], "requested": VERSION}
            return error(body["id"], -32022, "Unsupported protocol version", data=data)
        return fake.default("server/discover", body)

    fake.on("server/discover", once)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            assert client.protocol_version == VERSION
    discovers = fake.posts("server/discover")
    assert len(discovers) == 2
    assert discovers[0][1]["id"] != discovers[1][1]["id"]


async def test_no_mutual_version_fails_clearly_after_one_try(fake: StatelessFake) -> None:
    fake.supported = ["2099-01-01"]
    with anyio.fail_after(LIMIT), pytest.raises(UnsupportedProtocolVersionError, match="2099"):
        async with ResilientClient(URL, retry=FAST):
            pass
    assert len(fake.posts("server/discover")) == 1


async def test_header_mismatch_is_a_clear_protocol_error_after_one_retry(
    fake: StatelessFake,
) -> None:
    fake.on("tools/call", lambda body, request: error(body["id"], -32020, "Mcp-Param-X missing"))
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, retry=FAST) as client:
            with pytest.raises(ProtocolError, match="HeaderMismatch -32020.*Mcp-Param-X missing"):
                await client.call_tool("add", {}, idempotent=True)
    # The spec's SHOULD: once more after listing the tools again (the schema may have changed).
    assert len(fake.posts("tools/call")) == 2


# -- input_required (SEP-2322) -------------------------------------------------------------


def elicit(message: str) -> dict[str, Any]:
    return {
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {"ok": {"type": "boolean", "default": True}},
            },
        },
    }


async def test_input_required_is_answered_and_resent_with_state(fake: StatelessFake) -> None:
    seen: list[str] = []

    async def on_elicit(params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        seen.append(params.message)
        return mcp_types.ElicitResult(action="accept", content={})

    def flow(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        params = body["params"]
        if params["name"] != "book":
            return fake.default("tools/call", body)
        if "inputResponses" not in params:
            return result(
                body["id"],
                {
                    "resultType": "input_required",
                    "inputRequests": {"confirm": elicit("sure?")},
                    "requestState": "opaque/+=state",
                },
            )
        assert params["requestState"] == "opaque/+=state"
        answer = params["inputResponses"]["confirm"]
        return result(body["id"], {"content": [{"type": "text", "text": json.dumps(answer)}]})

    fake.on("tools/call", flow)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, elicitation_handler=on_elicit) as client:
            done = await client.call_tool("book", {"when": "now"})
            other = await client.call_tool("add", {"a": 1})
    assert seen == ["sure?"]
    assert json.loads(done.content[0].text) == {"action": "accept", "content": {"ok": True}}  # type: ignore[union-attr]
    assert other.structured_content == {"result": 1}
    calls = [body for _, body in fake.posts("tools/call")]
    assert [c["params"]["name"] for c in calls] == ["book", "book", "add"]
    assert calls[1]["params"]["arguments"] == {"when": "now"}
    assert calls[0]["id"] != calls[1]["id"]
    # The answers and state belong to that request only.
    assert "inputResponses" not in calls[2]["params"] and "requestState" not in calls[2]["params"]
    # The capability was declared on every request.
    assert calls[0]["params"]["_meta"][META_CAPABILITIES] == {"elicitation": {"form": {}}}


async def test_no_request_state_means_none_sent_back(fake: StatelessFake) -> None:
    def flow(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if "inputResponses" not in body["params"]:
            return result(
                body["id"],
                {"resultType": "input_required", "inputRequests": {"r": {"method": "roots/list"}}},
            )
        return result(body["id"], {"content": [], "structuredContent": body["params"]})

    fake.on("tools/call", flow)
    roots = [mcp_types.Root(uri="file:///w")]
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, roots=roots) as client:
            done = await client.call_tool("t", {})
    assert done.structured_content is not None
    assert "requestState" not in done.structured_content
    assert done.structured_content["inputResponses"] == {"r": {"roots": [{"uri": "file:///w"}]}}


async def test_input_rounds_are_bounded(fake: StatelessFake) -> None:
    fake.on(
        "tools/call",
        lambda body, request: result(
            body["id"], {"resultType": "input_required", "requestState": "again"}
        ),
    )
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            with pytest.raises(ProtocolError, match="still required input after 8 rounds"):
                await client.call_tool("t", {})
    calls = fake.posts("tools/call")
    assert len(calls) == 9  # the request and 8 rounds, each with its own id
    assert len({body["id"] for _, body in calls}) == 9


async def test_input_request_without_a_handler_is_a_clear_error(fake: StatelessFake) -> None:
    fake.on(
        "tools/call",
        lambda body, request: result(
            body["id"], {"resultType": "input_required", "inputRequests": {"a": elicit("?")}}
        ),
    )
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            with pytest.raises(ProtocolError, match="elicitation/create"):
                await client.call_tool("t", {})


# -- broken answers: re-issue only when safe, with a new id ------------------------------


def cut_stream(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
    """An SSE answer that ends before the response (the server died mid-call)."""
    return sse_response(sse_event({"jsonrpc": "2.0", "method": "notifications/progress",
                                   "params": {"progressToken": 0, "progress": 1}}))  # fmt: skip


def cut_the_first_call(fake: StatelessFake) -> None:
    """The first ``tools/call`` answer is cut mid-stream; later ones are answered normally."""
    cuts = 0

    def once(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        nonlocal cuts
        cuts += 1
        return cut_stream(body, request) if cuts == 1 else fake.default("tools/call", body)

    fake.on("tools/call", once)


async def test_a_cut_answer_to_a_read_only_call_is_reissued_with_a_new_id(
    fake: StatelessFake,
) -> None:
    cut_the_first_call(fake)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, retry=FAST) as client:
            await client.list_tools()  # "add" is readOnlyHint
            done = await client.call_tool("add", {"a": 4})
    assert done.structured_content == {"result": 4}
    calls = fake.posts("tools/call")
    assert len(calls) == 2
    assert calls[0][1]["id"] != calls[1][1]["id"]
    assert not [r for r in fake.requests if r.method == "GET"]  # no Last-Event-ID resume


async def test_a_cut_answer_to_an_unsafe_call_is_outcome_unknown(fake: StatelessFake) -> None:
    fake.tools = [{"name": "pay", "inputSchema": {"type": "object"}}]
    fake.on("tools/call", cut_stream)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, retry=FAST) as client:
            await client.list_tools()
            with pytest.raises(OutcomeUnknownError):
                await client.call_tool("pay", {"amount": 5})
            with pytest.raises(OutcomeUnknownError):
                await client.call_tool("pay", {"amount": 5}, idempotent=False)
    assert len(fake.posts("tools/call")) == 2  # each sent once, never re-sent
    assert not [r for r in fake.requests if r.method in ("GET", "DELETE")]


async def test_idempotent_true_allows_the_reissue(fake: StatelessFake) -> None:
    fake.tools = [{"name": "put", "inputSchema": {"type": "object"}}]
    cut_the_first_call(fake)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, retry=FAST) as client:
            await client.call_tool("put", {"v": 1}, idempotent=True)
    ids = [body["id"] for _, body in fake.posts("tools/call")]
    assert len(ids) == 2 and ids[0] != ids[1]


# -- per-request endpoint choice --------------------------------------------------------


async def test_each_request_goes_to_the_least_busy_endpoint() -> None:
    first, second = StatelessFake(URL), StatelessFake(URL2)
    release = anyio.Event()
    holding = anyio.Event()

    async def slow(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        holding.set()
        await release.wait()
        return (
            first.default("tools/call", body)
            if request.url == URL
            else second.default("tools/call", body)
        )

    first.on("tools/call", slow)
    second.on("tools/call", slow)
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=first)
        router.route(url=URL2).mock(side_effect=second)
        with anyio.fail_after(LIMIT):
            async with (
                ResilientClient([URL, URL2], retry=FAST) as client,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(client.call_tool, "add", {"a": 1})
                await holding.wait()
                busy = first if first.posts("tools/call") else second
                idle = second if busy is first else first
                second_call = anyio.Event()

                async def call_again() -> None:
                    await client.call_tool("add", {"a": 2})
                    second_call.set()

                second.on("tools/call", lambda b, r: second.default("tools/call", b))
                first.on("tools/call", lambda b, r: first.default("tools/call", b))
                tg.start_soon(call_again)
                await second_call.wait()
                release.set()
    assert len(idle.posts("tools/call")) == 1  # the second call went where nothing was in flight
    assert len(busy.posts("tools/call")) == 1
    # One negotiation; the other endpoint is asked its capabilities once before it gets a
    # keyed call (so a re-send knows whether its ledger recorded the first run).
    assert len(first.posts("server/discover")) + len(second.posts("server/discover")) == 2
    assert len(idle.posts("server/discover")) == 1 or len(busy.posts("server/discover")) == 1
    all_ids = [b["id"] for f in (first, second) for _, b in f.posts()]
    assert len(all_ids) == len(set(all_ids))  # ids are never reused, on any endpoint


async def test_a_dead_endpoint_is_avoided_per_request() -> None:
    """No session pins the client: when the endpoint it discovered on dies, calls go on."""
    fakes = {URL: StatelessFake(URL), URL2: StatelessFake(URL2)}
    dead: set[str] = set()

    async def route(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url in dead:
            raise httpx.ConnectError("refused")
        return await fakes[url](request)

    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=route)
        router.route(url=URL2).mock(side_effect=route)
        with anyio.fail_after(LIMIT):
            async with ResilientClient([URL, URL2], retry=FAST) as client:
                discovered = client.endpoint
                assert discovered is not None
                dead.add(discovered)
                for n in range(6):
                    done = await client.call_tool("add", {"a": n})
                    assert done.structured_content == {"result": n}
    alive = fakes[URL2 if discovered == URL else URL]
    assert len(alive.posts("tools/call")) == 6
    # No new negotiation: one capability check before its first keyed call, then none.
    assert len(alive.posts("server/discover")) == 1


# -- notifications and the tools cache ---------------------------------------------------


async def test_list_changes_arrive_on_subscriptions_listen(fake: StatelessFake) -> None:
    changed = anyio.Event()
    listed = anyio.Event()
    kinds: list[str] = []

    async def on_changed(kind: Any) -> None:
        kinds.append(kind)
        changed.set()

    async def listen(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        async def chunks() -> AsyncIterator[bytes]:
            ack = {
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {"notifications": body["params"]["notifications"]},
            }
            yield sse_event(ack).encode()
            await listed.wait()
            yield sse_event(
                {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
            ).encode()
            await anyio.Event().wait()

        return sse_response(chunks=chunks())

    fake.on("subscriptions/listen", listen)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, list_changed_handler=on_changed) as client:
            await client.list_tools()
            assert client.cached_tool("add") is not None
            listed.set()
            await changed.wait()
            assert client.cached_tool("add") is None  # the change invalidated the cache
    (request, body) = fake.posts("subscriptions/listen")[0]
    assert body["params"]["notifications"] == {"toolsListChanged": True}
    assert request.headers["mcp-method"] == "subscriptions/listen"
    assert kinds == ["tools"]


async def test_no_listen_stream_unless_notifications_were_asked_for(fake: StatelessFake) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            await client.list_tools()
    assert not fake.posts("subscriptions/listen")


async def test_tools_cache_honours_ttl(fake: StatelessFake) -> None:
    fake.ttl_ms = 50
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            await client.list_tools()
            assert client.tools_fresh
            with anyio.fail_after(5):
                while client.tools_fresh:
                    await anyio.sleep(0.01)
            # Stale, but still what was last listed.
            assert client.cached_tool("add") is not None
            fake.ttl_ms = 600_000
            await client.list_tools()
            assert client.tools_fresh
            assert client.cached_tool("add") is not None


async def test_stale_annotations_are_listed_again_before_a_reissue(fake: StatelessFake) -> None:
    """The re-send decision uses fresh annotations: a stale list is fetched again first."""
    fake.ttl_ms = 0
    fake.tools = [
        {"name": "get", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}}
    ]
    cut_the_first_call(fake)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, retry=FAST) as client:
            await client.list_tools()
            await client.call_tool("get", {})
    methods = [body["method"] for _, body in fake.posts()]
    assert methods == ["server/discover", "tools/list", "tools/call", "tools/list", "tools/call"]


async def test_progress_and_log_messages_arrive_on_the_answer_stream(fake: StatelessFake) -> None:
    def streamed(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        token = body["params"]["_meta"]["progressToken"]
        progress = {"progressToken": token, "progress": 1, "total": 2}
        log = {"level": "info", "data": "working"}
        answer = {"resultType": "complete", "content": [], "structuredContent": {"ok": True}}
        return sse_response(
            sse_event({"jsonrpc": "2.0", "method": "notifications/progress", "params": progress}),
            sse_event({"jsonrpc": "2.0", "method": "notifications/message", "params": log}),
            sse_event({"jsonrpc": "2.0", "id": body["id"], "result": answer}),
        )

    fake.on("tools/call", streamed)
    steps: list[tuple[float, float | None]] = []
    logs: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append((progress, total))

    async def on_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, log_handler=on_log) as client:
            await client.set_logging_level("info")
            done = await client.call_tool("work", {}, progress_handler=on_progress)
    assert done.structured_content == {"ok": True}
    assert steps == [(1.0, 2.0)]
    assert logs == ["working"]
    _, call = fake.posts("tools/call")[0]
    assert call["params"]["_meta"]["io.modelcontextprotocol/logLevel"] == "info"
    assert call["params"]["_meta"][META_VERSION] == VERSION  # merged with the progress token


async def test_a_timed_out_call_sends_no_cancel_notice(fake: StatelessFake) -> None:
    async def never(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if body["params"]["name"] != "slow":
            return fake.default("tools/call", body)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    fake.on("tools/call", never)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            with pytest.raises(TimeoutError):
                await client.call_tool("slow", {}, timeout=0.2)
            await client.call_tool("add", {})  # still usable
    # Closing the answer stream is the cancellation in this era: no notifications/cancelled.
    assert all("id" in body for _, body in fake.posts())


async def test_a_log_handler_of_ones_own_asks_for_log_messages(fake: StatelessFake) -> None:
    async def on_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
        pass

    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            await client.call_tool("add", {})
        async with ResilientClient(URL, log_handler=on_log) as client:
            await client.call_tool("add", {})
    (_, quiet), (_, asked) = fake.posts("tools/call")
    assert "io.modelcontextprotocol/logLevel" not in quiet["params"]["_meta"]
    assert asked["params"]["_meta"]["io.modelcontextprotocol/logLevel"] == "debug"
