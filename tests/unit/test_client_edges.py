"""Issue 19, client side, on scripted endpoints: the sharp edges a new user tripped on.

Each test pins one point in both eras where both apply: bad idempotency keys and values
with no UTF-8 form are refused before anything is sent, with a typed error naming the
rule; ``auto`` gives up on a server that never answers ``server/discover``; a read-only
tool's timeout is a plain timeout without a prior ``list_tools``; the "outcome unknown"
text says each thing once; per-call retry policies; ``ToolResult.data``;
``raise_on_error``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import mcp_types
import pytest
import respx

from mcp_resilient import (
    NO_RETRY,
    InvalidRequestError,
    OutcomeUnknownError,
    OutcomeUnknownTimeoutError,
    RequestTimeoutError,
    ResilientClient,
    RetryPolicy,
    ToolError,
    ToolResult,
)
from mcp_resilient._classify import (
    IDEMPOTENCY_CAPABILITY,
    IDEMPOTENCY_META_KEY,
    LEDGER_STARTED_NOT_FINISHED,
)
from mcp_resilient.integrations._common import failure_text
from tests.unit.conftest import URL, FakeServer, rpc_error, rpc_result
from tests.unit.stateless_fake import StatelessFake, decode

pytestmark = pytest.mark.anyio

LIMIT = 20.0  # bounds every test: a bug fails it instead of hanging it
FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)
ERAS = ["2025-11-25", "2026-07-28"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[StatelessFake]:
    server = StatelessFake(URL)
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=server)
        yield server


@pytest.fixture(params=ERAS)
def era(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer | StatelessFake]]:
    """A scripted endpoint of either era, and the version to pin the client to."""
    endpoint: FakeServer | StatelessFake = (
        FakeServer() if request.param == "2025-11-25" else StatelessFake(URL)
    )
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=endpoint)
        yield request.param, endpoint


def tool_calls(endpoint: FakeServer | StatelessFake) -> list[dict[str, Any]]:
    return [body for _, body in endpoint.posts("tools/call")]


# -- idempotency keys are checked before sending ------------------------------------------


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "1 to 255 characters"),
        ("k" * 256, "1 to 255 characters"),
        ("has space", "visible ASCII"),
        ("caf\u00e9", "visible ASCII"),
        ("line\nbreak", "visible ASCII"),
    ],
)
async def test_an_invalid_idempotency_key_is_refused_before_sending(
    era: tuple[str, FakeServer | StatelessFake], key: str, rule: str
) -> None:
    version, endpoint = era
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, protocol_version=version, listen=False) as client:
            with pytest.raises(InvalidRequestError, match=rule) as info:
                await client.call_tool("add", {"a": 1}, idempotency_key=key)
            ok = await client.call_tool("add", {"a": 1}, idempotency_key="order-1234")
    assert isinstance(info.value, ValueError)  # a bad argument, as Python says it
    assert "idempotency key" in str(info.value)
    assert "session" not in str(info.value)  # the old wrong hint: "missing a session"
    sent = tool_calls(endpoint)
    assert len(sent) == 1  # only the valid call went out
    assert sent[0]["params"]["_meta"][IDEMPOTENCY_META_KEY] == "order-1234"
    assert ok.is_error is False


# -- values with no UTF-8 form --------------------------------------------------------------


async def test_a_lone_surrogate_in_a_tool_name_is_a_typed_error_in_the_new_era(
    fake: StatelessFake,
) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False) as client:
            with pytest.raises(InvalidRequestError, match="lone surrogate") as info:
                await client.call_tool("bad\ud800name", {})
            await client.call_tool("grüße", {})  # valid non-ASCII still goes base64
    assert isinstance(info.value, ValueError)
    assert "Mcp-Name" in str(info.value) and "U+D800" in str(info.value)
    sent = fake.posts("tools/call")
    assert [decode(r.headers["mcp-name"]) for r, _ in sent] == ["grüße"]


async def test_a_lone_surrogate_in_a_header_mirrored_argument_is_a_typed_error(
    fake: StatelessFake,
) -> None:
    fake.tools = [
        {
            "name": "q",
            "inputSchema": {
                "type": "object",
                "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
            },
        }
    ]
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False) as client:
            await client.list_tools()
            with pytest.raises(InvalidRequestError, match="Mcp-Param-Region"):
                await client.call_tool("q", {"region": "eu\udcff"})
            # The same text in an argument no header mirrors is only body: sent as JSON.
            await client.call_tool("q", {"other": "eu\udcff"})
    assert len(fake.posts("tools/call")) == 1


async def test_a_lone_surrogate_still_goes_as_json_in_the_handshake_era(
    server: FakeServer,
) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, protocol_version="2025-11-25", listen=False) as client:
            await client.call_tool("bad\ud800name", {})
    ((_, body),) = server.posts("tools/call")
    assert body["params"]["name"] == "bad\ud800name"


# -- auto gives up on a discover that never answers -----------------------------------------


async def test_auto_falls_back_when_server_discover_never_answers(server: FakeServer) -> None:
    async def never(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    server.on("server/discover", never)
    with anyio.fail_after(LIMIT):
        # Before: the probe used up the whole 3 s and the open failed with a timeout.
        async with ResilientClient(URL, timeout=3, listen=False) as client:
            assert client.protocol_version == "2025-11-25"
            result = await client.call_tool("add", {"a": 2})
    assert result.structured_content == {"result": 2}
    methods = [body["method"] for _, body in server.posts()]
    assert methods[:2] == ["server/discover", "initialize"]


# -- a read-only tool's timeout without list_tools ------------------------------------------


async def test_read_only_timeout_is_plain_without_listing_first(
    era: tuple[str, FakeServer | StatelessFake],
) -> None:
    version, endpoint = era
    endpoint.tools = [
        {
            "name": "slow_read",
            "inputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": True},
        },
        {"name": "slow_write", "inputSchema": {"type": "object"}},
    ]

    async def slow(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    endpoint.on("tools/call", slow)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, protocol_version=version, listen=False) as client:
            assert client.cached_tool("slow_read") is None  # never listed
            with pytest.raises(RequestTimeoutError) as read:
                await client.call_tool("slow_read", timeout=0.5)
            with pytest.raises(OutcomeUnknownTimeoutError):
                await client.call_tool("slow_write", timeout=0.5)
    assert not isinstance(read.value, OutcomeUnknownError), read.value
    assert "did not complete within 0.5 s" in str(read.value)


async def test_a_fast_call_costs_no_lookup(server: FakeServer) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, protocol_version="2025-11-25", listen=False) as client:
            await client.call_tool("add", {"a": 1})
    assert server.posts("tools/list") == []


# -- "outcome unknown" says each thing once -------------------------------------------------


def _ledger_confirms_lost_run(server: FakeServer) -> None:
    """The server honours keys; the first call's answer is lost, the re-send gets -31901."""
    server.tools = [{"name": "increment", "inputSchema": {"type": "object"}}]
    calls = {"n": 0}

    def initialize(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return rpc_result(
            body["id"],
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}, "experimental": {IDEMPOTENCY_CAPABILITY: {}}},
                "serverInfo": {"name": "fake", "version": "1.0"},
            },
            **{"mcp-session-id": "sess-1"},
        )

    def call(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ReadError("connection reset after the request went out", request=request)
        return rpc_error(
            body["id"],
            LEDGER_STARTED_NOT_FINISHED,
            "the server confirms a call with this idempotency key started and never finished"
            " (its runner stopped before recording a result); it was not run again",
        )

    server.on("initialize", initialize)
    server.on("tools/call", call)


async def test_a_confirmed_lost_run_is_said_once(server: FakeServer) -> None:
    _ledger_confirms_lost_run(server)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            URL, protocol_version="2025-11-25", retry=FAST, listen=False
        ) as client:
            with pytest.raises(OutcomeUnknownError) as info:
                await client.call_tool("increment", {"by": 1})
    text = str(info.value)
    assert text.count("it was not run again") == 1, text
    assert text.count("never finished") == 1, text
    assert text.count("(") == text.count(")")
    # An agent's view of it: no claim that it was not retried (it was re-sent with its key).
    agent = failure_text(info.value)
    assert "NOT retried" not in agent
    assert agent.count("never finished") == 1, agent
    assert "may have run" in agent


# -- per-call retry policy ----------------------------------------------------------------


async def test_a_per_call_retry_policy_overrides_the_clients(server: FakeServer) -> None:
    failures = {"left": 2}

    def busy(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if failures["left"] > 0:
            failures["left"] -= 1
            return httpx.Response(503)
        return rpc_result(body["id"], {"content": [], "structuredContent": {"result": 1}})

    server.on("tools/call", busy)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            URL, protocol_version="2025-11-25", retry=NO_RETRY, listen=False
        ) as client:
            with pytest.raises(Exception, match="503"):
                await client.call_tool("add")  # the client's own policy: one attempt
            result = await client.call_tool(
                "add", retry=RetryPolicy(max_attempts=3, initial_backoff=0.001, budget=None)
            )
    assert result.structured_content == {"result": 1}
    assert len(server.posts("tools/call")) == 3


# -- ToolResult: data, endpoint, raise_on_error ----------------------------------------------


async def test_tool_result_data_endpoint_and_raise_on_error(
    era: tuple[str, FakeServer | StatelessFake],
) -> None:
    version, endpoint = era

    def answer(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        name = body["params"]["name"]
        rid = body["id"]
        complete = {"resultType": "complete"} if version != "2025-11-25" else {}
        if name == "wrapped":
            return rpc_result(
                rid,
                {
                    **complete,
                    "content": [{"type": "text", "text": "3"}],
                    "structuredContent": {"result": 3},
                    "_meta": {"fastmcp": {"wrap_result": True}},
                },
            )
        if name == "obj":
            return rpc_result(
                rid, {**complete, "content": [], "structuredContent": {"a": 1, "result": 2}}
            )
        if name == "text":
            return rpc_result(rid, {**complete, "content": [{"type": "text", "text": "hi"}]})
        return rpc_result(
            rid,
            {**complete, "content": [{"type": "text", "text": "no such order"}], "isError": True},
        )

    endpoint.on("tools/call", answer)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, protocol_version=version, listen=False) as client:
            wrapped = await client.call_tool("wrapped")
            obj = await client.call_tool("obj")
            plain = await client.call_tool("text")
            failed = await client.call_tool("broken")  # default: returned, not raised
            with pytest.raises(ToolError, match="no such order") as info:
                await client.call_tool("broken", raise_on_error=True)
            last = client.last_endpoint
    assert isinstance(wrapped, ToolResult) and isinstance(wrapped, mcp_types.CallToolResult)
    assert wrapped.data == 3
    assert wrapped.structured_content == {"result": 3}  # the field as sent, untouched
    assert obj.data == {"a": 1, "result": 2}  # not marked wrapped: as sent
    assert plain.data is None
    assert failed.is_error is True
    assert info.value.tool == "broken" and info.value.result.is_error is True
    assert wrapped.endpoint == last == URL
    # Still the protocol's model: equal to it, and it dumps the same JSON.
    same = mcp_types.CallToolResult.model_validate(wrapped.model_dump(by_alias=True))
    assert wrapped == same
    assert json.loads(wrapped.model_dump_json(by_alias=True)) == json.loads(
        same.model_dump_json(by_alias=True)
    )
