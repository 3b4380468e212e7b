"""An answer that ends without its response is in doubt, never a protocol error (issue 17).

A server shutting down (sse-starlette 3.7.1 and later end open SSE answers cleanly, with no
event) or a proxy cutting a body leaves a request that reached the server with no answer.
Every framing of that, in both eras, is decided as for a broken connection: a read-only
call is re-sent, a keyed call to a server that honours keys is re-sent with its key, and
anything else is ``OutcomeUnknownError``. Answers that are actually malformed stay
``ProtocolError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

from mcp_resilient import (
    OutcomeUnknownError,
    ProtocolError,
    ResilientClient,
    RetryPolicy,
    StreamEndedError,
)
from mcp_resilient._classify import IDEMPOTENCY_CAPABILITY, IDEMPOTENCY_META_KEY
from tests.unit.conftest import URL, FakeServer, ScriptedEndpoint, sse_response
from tests.unit.stateless_fake import VERSION, StatelessFake

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)
LIMIT = 10
ERAS = {"handshake": "2025-11-25", "stateless": VERSION}

SSE = {"content-type": "text/event-stream"}
JSON = {"content-type": "application/json"}
FRAMINGS: dict[str, Callable[[], httpx.Response]] = {
    # sse-starlette >= 3.7.1 at shutdown: the SSE answer ends with no event at all.
    "sse-no-events": lambda: httpx.Response(200, headers=SSE, content=b""),
    # Events that carry no id (and no message): nothing to resume from.
    "sse-events-without-id": lambda: sse_response(": keep-alive\n\n", "data: \n\n", "data:\n\n"),
    "json-empty": lambda: httpx.Response(200, headers=JSON, content=b""),
    "json-cut-short": lambda: httpx.Response(
        200, headers=JSON, content=b'{"jsonrpc": "2.0", "id": 3, "result": {"content": [{"ty'
    ),
    "json-cut-in-a-string": lambda: httpx.Response(
        200, headers=JSON, content=b'{"jsonrpc": "2.0", "id": 3, "result": {"x": "abc'
    ),
    "200-no-body": lambda: httpx.Response(200),
}


@pytest.fixture(params=sorted(ERAS))
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def endpoint(era: str) -> Iterator[ScriptedEndpoint]:
    fake: ScriptedEndpoint = FakeServer() if era == "handshake" else StatelessFake(URL)
    fake.tools = [
        {"name": "add", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}},
        {"name": "increment", "inputSchema": {"type": "object"}},
    ]
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=fake)
        yield fake


def first_call_ends(endpoint: ScriptedEndpoint, framing: str) -> list[dict[str, Any]]:
    """The first ``tools/call`` gets ``framing``; later ones are answered normally."""
    calls: list[dict[str, Any]] = []

    def answer(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        calls.append(body)
        if len(calls) == 1:
            return FRAMINGS[framing]()
        return endpoint.default("tools/call", body)

    endpoint.on("tools/call", answer)
    return calls


def honour_keys(endpoint: ScriptedEndpoint) -> None:
    if isinstance(endpoint, StatelessFake):
        endpoint.capabilities["experimental"] = {IDEMPOTENCY_CAPABILITY: {}}
        return

    def initialize(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        answer = endpoint.default("initialize", body)
        message = answer.json()
        message["result"]["capabilities"]["experimental"] = {IDEMPOTENCY_CAPABILITY: {}}
        return httpx.Response(200, json=message, headers={"mcp-session-id": "sess-1"})

    endpoint.on("initialize", initialize)


def client(era: str) -> ResilientClient:
    return ResilientClient(URL, protocol_version=ERAS[era], retry=FAST, listen=False, timeout=5)


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
async def test_read_only_call_is_resent(endpoint: ScriptedEndpoint, era: str, framing: str) -> None:
    calls = first_call_ends(endpoint, framing)
    async with client(era) as c:
        with anyio.fail_after(LIMIT):
            result = await c.call_tool("add", {"a": 1, "b": 2})
    assert result.structured_content == {"result": 3}
    assert len(calls) == 2


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
async def test_unsafe_call_is_outcome_unknown(
    endpoint: ScriptedEndpoint, era: str, framing: str
) -> None:
    calls = first_call_ends(endpoint, framing)
    async with client(era) as c:
        with anyio.fail_after(LIMIT), pytest.raises(OutcomeUnknownError) as info:
            await c.call_tool("increment", {"by": 1})
        # The client stays usable.
        assert (await c.call_tool("add", {"a": 2})).structured_content == {"result": 2}
    assert isinstance(info.value.__cause__, StreamEndedError), info.value.__cause__
    assert "ended without its response" in str(info.value)
    assert info.value.endpoint == URL
    assert len(calls) == 2  # the increment once (never re-sent), then the add


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
async def test_keyed_call_is_resent_with_its_key(
    endpoint: ScriptedEndpoint, era: str, framing: str
) -> None:
    honour_keys(endpoint)
    calls = first_call_ends(endpoint, framing)
    async with client(era) as c:
        with anyio.fail_after(LIMIT):
            result = await c.call_tool("increment", {"by": 4})
    assert result.structured_content == {"result": 4}
    keys = [body["params"]["_meta"][IDEMPOTENCY_META_KEY] for body in calls]
    assert len(keys) == 2 and keys[0] == keys[1], keys


@pytest.mark.parametrize(
    ("content", "headers", "match"),
    [
        (b'{"jsonrpc": "2.0", "id": }', JSON, "malformed JSON"),
        (b'{"jsonrpc": "2.0", "id": 1}}', JSON, "malformed JSON"),
        (b"<html>busy</html>", JSON, "malformed JSON"),
        (b"<html>busy</html>", {}, "content type"),
        (b"data: {not json}\n\n", SSE, "malformed JSON"),
    ],
)
async def test_malformed_answers_stay_protocol_errors(
    endpoint: ScriptedEndpoint, era: str, content: bytes, headers: dict[str, str], match: str
) -> None:
    endpoint.on(
        "tools/call", lambda body, request: httpx.Response(200, headers=headers, content=content)
    )
    async with client(era) as c:
        with anyio.fail_after(LIMIT), pytest.raises(ProtocolError, match=match):
            await c.call_tool("add", {"a": 1})
