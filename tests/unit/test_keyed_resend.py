"""A keyed call in doubt whose re-sends never get through stays "outcome unknown".

With a server that honours idempotency keys, a non-idempotent call whose answer was lost is
re-sent under its key. If every re-send is then refused (the server died and nothing came
back), the first attempt may still have run: the caller must hear "outcome unknown", not a
connection error that reads as "nothing ran", and not a plain timeout.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mcp_resilient import (
    ConnectError,
    OutcomeUnknownError,
    OutcomeUnknownTimeoutError,
    RequestTimeoutError,
    ResilientClient,
    RetryPolicy,
)
from mcp_resilient._classify import IDEMPOTENCY_CAPABILITY, IDEMPOTENCY_META_KEY
from tests.unit.conftest import URL, FakeServer, rpc_result

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)


def _keyed_server(server: FakeServer) -> dict[str, Any]:
    """The server honours keys; the first tools/call breaks after it went out, then it is gone."""
    state: dict[str, Any] = {"calls": 0, "dead": False, "keys": []}
    server.tools = [{"name": "increment", "inputSchema": {"type": "object"}}]

    def initialize(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if state["dead"]:
            raise httpx.ConnectError("connection refused", request=request)
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
        if state["dead"]:
            raise httpx.ConnectError("connection refused", request=request)
        state["calls"] += 1
        state["keys"].append(body["params"]["_meta"][IDEMPOTENCY_META_KEY])
        state["dead"] = True
        raise httpx.ReadError("connection reset after the request went out", request=request)

    server.on("initialize", initialize)
    server.on("tools/call", call)
    return state


async def test_refused_resends_after_doubt_are_outcome_unknown(server: FakeServer) -> None:
    state = _keyed_server(server)
    policy = RetryPolicy(
        initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None, max_attempts=4
    )
    async with ResilientClient(
        URL, protocol_version="2025-11-25", retry=policy, listen=False, timeout=10
    ) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.call_tool("increment", {"by": 1})
    assert not isinstance(info.value, ConnectError)
    assert "may have run" in str(info.value)
    assert state["calls"] == 1  # the server saw it once; the re-sends never got through


async def test_deadline_after_doubt_is_an_outcome_unknown_timeout(server: FakeServer) -> None:
    state = _keyed_server(server)
    async with ResilientClient(
        URL, protocol_version="2025-11-25", retry=FAST, listen=False, timeout=10
    ) as client:
        with pytest.raises(OutcomeUnknownTimeoutError) as info:
            await client.call_tool("increment", {"by": 1}, timeout=1.0)
    assert isinstance(info.value, RequestTimeoutError)
    assert isinstance(info.value, OutcomeUnknownError)
    assert state["calls"] == 1


async def test_a_keyed_resend_never_reaches_an_endpoint_without_the_ledger() -> None:
    """Mixed fleet, 2026-07-28: A honours keys, B does not. A call in doubt on A (then A is
    gone) is not re-sent to B, which would run it a second time: outcome unknown."""
    import anyio
    import respx

    from tests.unit.stateless_fake import StatelessFake

    a_url, b_url = "http://a.test/mcp", "http://b.test/mcp"
    a, b = StatelessFake(a_url), StatelessFake(b_url)
    a.capabilities = {"tools": {}, "extensions": {IDEMPOTENCY_CAPABILITY: {}}}
    state = {"a_dead": False, "a_discovered": False}
    ran_on_b: list[Any] = []

    async def route_a(request: httpx.Request) -> httpx.Response:
        if state["a_dead"]:
            raise httpx.ConnectError("connection refused", request=request)
        if b'"tools/call"' in request.content:
            state["a_dead"] = True  # it ran, and the answer is lost with the process
            raise httpx.ReadError("connection reset after the request went out", request=request)
        state["a_discovered"] = True
        return await a(request)

    async def route_b(request: httpx.Request) -> httpx.Response:
        if not state["a_discovered"] or (
            b'"tools/call"' in request.content and not state["a_dead"]
        ):
            # Not yet: the client negotiates with A and sends its call there first.
            raise httpx.ConnectError("connection refused", request=request)
        if b'"tools/call"' in request.content:
            ran_on_b.append(request)
        return await b(request)

    with respx.mock(assert_all_called=False) as router:
        router.route(url=a_url).mock(side_effect=route_a)
        router.route(url=b_url).mock(side_effect=route_b)
        with anyio.fail_after(30):
            async with ResilientClient([a_url, b_url], retry=FAST, timeout=10) as client:
                with pytest.raises(OutcomeUnknownError) as info:
                    await client.call_tool("pay", {"amount": 5})
    assert ran_on_b == []  # never sent where no ledger would recognise the key
    assert "may have run" in str(info.value) or "answer was lost" in str(info.value)
