"""Resource-update subscriptions in both eras, and the -32020 header-mismatch retry.

Handshake era: ``resources/subscribe`` / ``resources/unsubscribe``, updates on the GET
stream, subscriptions renewed on a replacement session. 2026-07-28 era: the URIs ride in
``subscriptions/listen``'s ``resourceSubscriptions``; the stream is reopened when they change.
Every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

from mcp_resilient import ProtocolError, ResilientClient, RetryPolicy
from tests.unit.conftest import FakeServer, rpc_result, sse_event, sse_response
from tests.unit.stateless_fake import StatelessFake, error

pytestmark = pytest.mark.anyio

LIMIT = 10
S_URL = "http://s.test/mcp"
FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)
URI = "file:///notes.txt"
URI2 = "file:///todo.txt"


@pytest.fixture
def fake() -> Iterator[StatelessFake]:
    server = StatelessFake(S_URL)
    with respx.mock(assert_all_called=False) as router:
        router.route(url=S_URL).mock(side_effect=server)
        yield server


def offer_subscriptions(server: FakeServer) -> None:
    """initialize announces ``resources.subscribe``; subscribe/unsubscribe are answered."""

    def initialize(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        headers = {"mcp-session-id": server.session_id} if server.session_id else {}
        caps = {"tools": {}, "resources": {"subscribe": True}}
        return rpc_result(
            body["id"],
            {
                "protocolVersion": server.version,
                "capabilities": caps,
                "serverInfo": {"name": "fake", "version": "1.0"},
            },
            **headers,
        )

    server.on("initialize", initialize)
    server.on("resources/subscribe", lambda body, request: rpc_result(body["id"], {}))
    server.on("resources/unsubscribe", lambda body, request: rpc_result(body["id"], {}))


def updated(uri: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}


# -- handshake era -------------------------------------------------------------------------


async def test_handshake_subscribe_delivers_updates_and_unsubscribe(server: FakeServer) -> None:
    offer_subscriptions(server)
    subscribed = anyio.Event()
    got = anyio.Event()
    uris: list[str] = []
    generic: list[tuple[str, Any]] = []

    def on_subscribe(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        subscribed.set()
        return rpc_result(body["id"], {})

    async def on_get(request: httpx.Request) -> httpx.Response:
        async def chunks() -> AsyncIterator[bytes]:
            await subscribed.wait()
            yield sse_event(updated(URI), id="1").encode()
            await anyio.Event().wait()

        return sse_response(chunks=chunks())

    async def on_updated(uri: str) -> None:
        uris.append(uri)
        got.set()

    async def on_any(method: str, params: dict[str, Any] | None) -> None:
        generic.append((method, params))

    server.on("resources/subscribe", on_subscribe)
    server.get_answer = on_get
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            server.url, resource_updated_handler=on_updated, notification_handler=on_any
        ) as client:
            await client.subscribe_resource(URI)
            await got.wait()
            await client.unsubscribe_resource(URI)
    assert uris == [URI]
    assert ("notifications/resources/updated", {"uri": URI}) in generic
    [(_, sub)] = server.posts("resources/subscribe")
    assert sub["params"]["uri"] == URI
    [(_, unsub)] = server.posts("resources/unsubscribe")
    assert unsub["params"]["uri"] == URI


async def test_handshake_subscribe_needs_the_server_capability(server: FakeServer) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(server.url) as client:
            with pytest.raises(ProtocolError, match=r"resources\.subscribe"):
                await client.subscribe_resource(URI)
    assert not server.posts("resources/subscribe")


async def test_handshake_resubscribes_on_a_replacement_session(server: FakeServer) -> None:
    offer_subscriptions(server)
    expired = False

    def call(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        nonlocal expired
        if not expired:  # the first session is gone; the next initialize makes sess-2
            expired = True
            server.session_id = "sess-2"
            return httpx.Response(404, json={"error": {"code": -32600, "message": "nope"}})
        return server.default("tools/call", body)

    server.on("tools/call", call)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(server.url, retry=FAST) as client:
            await client.subscribe_resource(URI)
            await client.subscribe_resource(URI2)
            await client.unsubscribe_resource(URI2)
            result = await client.call_tool("add", {"a": 1}, idempotent=True)
            assert client.session_id == "sess-2"
    assert result.structured_content == {"result": 1}
    subs = [
        (r.headers.get("mcp-session-id"), b["params"]["uri"])
        for r, b in server.posts("resources/subscribe")
    ]
    # Only what is still subscribed is renewed, on the new session, before the call re-runs.
    assert subs == [("sess-1", URI), ("sess-1", URI2), ("sess-2", URI)]
    methods = [b["method"] for _, b in server.posts()]
    last_open = len(methods) - 1 - methods[::-1].index("initialize")
    after = methods[last_open:]
    assert after.index("resources/subscribe") < after.index("tools/call")
    assert after[-1] == "tools/call"


# -- 2026-07-28 era ------------------------------------------------------------------------


def listen_answer(
    filters: list[dict[str, Any]], *, agree: bool = True, opened: anyio.Event | None = None
) -> Any:
    """A ``subscriptions/listen`` that acks and sends one update per subscribed URI."""

    async def listen(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        wanted = dict(body["params"]["notifications"])
        filters.append(wanted)
        if opened is not None:
            opened.set()
        agreed = (
            wanted if agree else {k: v for k, v in wanted.items() if k != "resourceSubscriptions"}
        )

        async def chunks() -> AsyncIterator[bytes]:
            ack = {
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {"notifications": agreed},
            }
            yield sse_event(ack).encode()
            for uri in agreed.get("resourceSubscriptions", []):
                yield sse_event(updated(uri)).encode()
            await anyio.Event().wait()

        return sse_response(chunks=chunks())

    return listen


async def test_stateless_subscriptions_ride_on_subscriptions_listen(fake: StatelessFake) -> None:
    fake.capabilities = {"resources": {"subscribe": True}}
    filters: list[dict[str, Any]] = []
    reopened = anyio.Event()
    uris: list[str] = []
    both = anyio.Event()

    async def on_updated(uri: str) -> None:
        uris.append(uri)
        if URI2 in uris:
            both.set()

    async def listen(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if len(filters) == 2:
            reopened.set()
        return await listen_answer(filters)(body, request)

    fake.on("subscriptions/listen", listen)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(S_URL, resource_updated_handler=on_updated) as client:
            assert client.protocol_version == "2026-07-28"
            await client.subscribe_resource(URI)
            await client.subscribe_resource(URI2)
            await both.wait()
            await client.unsubscribe_resource(URI)
            await reopened.wait()
    assert filters == [
        {"resourceSubscriptions": [URI]},
        {"resourceSubscriptions": [URI, URI2]},
        {"resourceSubscriptions": [URI2]},
    ]
    assert URI in uris
    assert not fake.posts("resources/subscribe")  # the RPC is gone in this era


async def test_stateless_subscription_not_acknowledged_is_an_error(fake: StatelessFake) -> None:
    fake.capabilities = {"resources": {"subscribe": True}}
    filters: list[dict[str, Any]] = []
    fake.on("subscriptions/listen", listen_answer(filters, agree=False))
    with anyio.fail_after(LIMIT):
        async with ResilientClient(S_URL) as client:
            with pytest.raises(ProtocolError, match="did not agree"):
                await client.subscribe_resource(URI)
    assert filters[0] == {"resourceSubscriptions": [URI]}


async def test_stateless_listen_refused_fails_the_subscribe_at_once(fake: StatelessFake) -> None:
    fake.capabilities = {"resources": {"subscribe": True}}
    fake.on(
        "subscriptions/listen",
        lambda body, request: error(body["id"], -32601, "no listen here", status=404),
    )
    with anyio.fail_after(LIMIT):
        async with ResilientClient(S_URL, timeout=LIMIT * 2) as client:
            with pytest.raises(ProtocolError, match="did not agree"):
                await client.subscribe_resource(URI)
    assert len(fake.posts("subscriptions/listen")) == 1


async def test_stateless_subscribe_needs_the_server_capability(fake: StatelessFake) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(S_URL) as client:
            with pytest.raises(ProtocolError, match=r"resources\.subscribe"):
                await client.subscribe_resource(URI)
    assert not fake.posts("subscriptions/listen")


# -- -32020: retry once with a fresh tools list --------------------------------------------


async def test_header_mismatch_retries_once_with_a_fresh_tool_schema(fake: StatelessFake) -> None:
    plain = {"type": "object", "properties": {"region": {"type": "string"}}}
    fake.tools = [{"name": "where", "inputSchema": plain}]

    def call(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if request.headers.get("mcp-param-region") != body["params"]["arguments"]["region"]:
            return error(body["id"], -32020, "Mcp-Param-Region missing")
        return fake.default("tools/call", body)

    fake.on("tools/call", call)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(S_URL, retry=FAST) as client:
            await client.list_tools()
            # The server's schema changes: the parameter is now mirrored into a header.
            marked = {"type": "string", "x-mcp-header": "Region"}
            fake.tools = [
                {"name": "where", "inputSchema": {**plain, "properties": {"region": marked}}}
            ]
            result = await client.call_tool("where", {"region": "eu"})
    assert not result.is_error
    calls = fake.posts("tools/call")
    assert len(calls) == 2
    assert "mcp-param-region" not in calls[0][0].headers
    assert calls[1][0].headers["mcp-param-region"] == "eu"
    assert len(fake.posts("tools/list")) == 2


async def test_header_mismatch_twice_is_a_clear_protocol_error(fake: StatelessFake) -> None:
    fake.on("tools/call", lambda body, request: error(body["id"], -32020, "Mcp-Param-X missing"))
    with anyio.fail_after(LIMIT):
        async with ResilientClient(S_URL, retry=FAST) as client:
            with pytest.raises(ProtocolError, match="-32020.*after listing the tools again"):
                await client.call_tool("add", {}, idempotent=True)
    assert len(fake.posts("tools/call")) == 2
    assert len(fake.posts("tools/list")) == 1
