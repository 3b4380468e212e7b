"""Negotiating the era: ``auto`` probes ``server/discover``, falls back, remembers, re-probes.

The servers here are respx fakes: ``FakeServer`` (handshake era), ``StatelessFake``
(2026-07-28) and ``Switch``, one URL whose server can be swapped for one of the other era
mid-test, as an upgraded or downgraded replica behind a balancer would be.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

import mcp_resilient
from mcp_resilient import (
    HTTPStatusError,
    ProtocolError,
    ResilientClient,
    RetryPolicy,
)
from tests.unit.conftest import SESSION, FakeServer
from tests.unit.stateless_fake import VERSION, StatelessFake, error

pytestmark = pytest.mark.anyio

URL = "http://mcp.test/mcp"
LIMIT = 10
FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)
MISSING_SESSION = httpx.Response(
    400,
    json={
        "jsonrpc": "2.0",
        "id": "server-error",
        "error": {"code": -32600, "message": "Bad Request: Missing session ID"},
    },
)


class Switch:
    """One endpoint whose server speaks one era or the other; records every POST."""

    def __init__(self, era: str) -> None:
        self.era = era
        self.handshake = FakeServer()
        self.stateless = StatelessFake(URL)
        self.methods: list[str] = []
        self.runs = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.methods.append(f"{request.method} {body.get('method', '')}".strip())
        if self.era == "stateless":
            response = await self.stateless(request)
        elif (
            request.method == "POST"
            and "mcp-session-id" not in request.headers
            and body.get("method") != "initialize"
        ):
            response = MISSING_SESSION  # what a handshake-only server says to a stateless POST
        else:
            response = await self.handshake(request)
        if body.get("method") == "tools/call" and response.status_code == 200:
            self.runs += 1
        return response


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def switch() -> Iterator[Switch]:
    server = Switch("stateless")
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=server)
        yield server


def posts(switch: Switch) -> list[str]:
    return [m.removeprefix("POST ") for m in switch.methods if m.startswith("POST")]


async def test_auto_is_the_default_and_picks_the_new_era(switch: Switch) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            assert client.protocol_version == VERSION
            assert client.session_id is None
            await client.call_tool("add", {"a": 1})
    assert posts(switch) == ["server/discover", "tools/call"]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda rid: MISSING_SESSION, id="400-missing-session"),
        pytest.param(lambda rid: httpx.Response(400, text="Bad Request"), id="400-text"),
        pytest.param(lambda rid: httpx.Response(404), id="404-empty"),
        pytest.param(lambda rid: httpx.Response(405), id="405"),
        pytest.param(
            lambda rid: httpx.Response(
                200, json={"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "?"}}
            ),
            id="200-method-not-found",
        ),
        pytest.param(
            lambda rid: httpx.Response(200, json={"jsonrpc": "2.0", "id": rid, "result": {}}),
            id="200-empty-result",
        ),
    ],
)
async def test_auto_falls_back_to_the_handshake_on_any_legacy_answer(
    switch: Switch, answer: Any
) -> None:
    switch.era = "handshake"
    switch.handshake.on("server/discover", lambda body, request: answer(body["id"]))
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False) as client:
            assert client.protocol_version == "2025-11-25"
            assert client.session_id == SESSION
            await client.call_tool("add", {"a": 1})
    assert posts(switch)[:3] == ["server/discover", "initialize", "notifications/initialized"]


async def test_a_modern_error_is_no_reason_to_fall_back(switch: Switch) -> None:
    refused = 0

    def once(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        nonlocal refused
        refused += 1
        if refused == 1:
            return error(body["id"], -32022, "no", data={"supported": [VERSION]})
        return switch.stateless.default("server/discover", body)

    switch.stateless.on("server/discover", once)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL) as client:
            assert client.protocol_version == VERSION
    assert posts(switch) == ["server/discover", "server/discover"]


async def test_the_era_is_remembered_per_endpoint(switch: Switch) -> None:
    switch.era = "handshake"
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False, retry=FAST) as client:
            first = client.session_id
            switch.handshake.session_id = "sess-2"
            # The session is gone: a new one is opened with the handshake straight away.
            switch.handshake.on(
                "tools/list",
                lambda body, request: (
                    httpx.Response(404)
                    if request.headers.get("mcp-session-id") == first
                    else switch.handshake.default("tools/list", body)
                ),
            )
            await client.list_tools()
            assert client.session_id == "sess-2"
    assert posts(switch).count("server/discover") == 1
    assert posts(switch).count("initialize") == 2


async def test_an_upgraded_server_is_negotiated_again(switch: Switch) -> None:
    switch.era = "handshake"
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False, retry=FAST) as client:
            assert client.session_id == SESSION
            switch.era = "stateless"  # the replica behind the URL now speaks only 2026-07-28
            # Not idempotent: re-sent only because the refusal proves it did not run.
            done = await client.call_tool("add", {"a": 5}, idempotent=False)
            assert done.structured_content == {"result": 5}
            assert client.protocol_version == VERSION
            assert client.session_id is None
    assert switch.runs == 1
    assert posts(switch)[-3:] == ["tools/call", "server/discover", "tools/call"]


async def test_a_downgraded_server_is_negotiated_again(switch: Switch) -> None:
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False, retry=FAST) as client:
            assert client.protocol_version == VERSION
            switch.era = "handshake"  # rolled back to a handshake-only build
            done = await client.call_tool("add", {"a": 6}, idempotent=False)
            assert done.structured_content == {"result": 6}
            assert client.protocol_version == "2025-11-25"
            assert client.session_id == SESSION
    assert switch.runs == 1
    assert posts(switch)[-5:] == [
        "tools/call",
        "server/discover",
        "initialize",
        "notifications/initialized",
        "tools/call",
    ]


async def test_negotiating_again_is_bounded(switch: Switch) -> None:
    """A modern server refusing a call with a plain 400 is not mistaken for a change forever."""
    switch.stateless.on(
        "tools/call", lambda body, request: error(body["id"], -32602, "bad arguments")
    )
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, listen=False, retry=FAST) as client:
            with pytest.raises(HTTPStatusError) as caught:
                await client.call_tool("add", {"a": 1}, idempotent=True)
    assert caught.value.status_code == 400
    assert posts(switch).count("tools/call") == 2
    assert posts(switch).count("server/discover") == 2


async def test_pinned_new_era_with_a_handshake_server_fails_clearly(switch: Switch) -> None:
    switch.era = "handshake"
    with anyio.fail_after(LIMIT), pytest.raises(ProtocolError, match="handshake-era server"):
        async with ResilientClient(URL, protocol_version=VERSION, retry=FAST):
            pass
    assert "initialize" not in posts(switch)


async def test_a_pinned_handshake_version_never_probes(switch: Switch) -> None:
    switch.era = "handshake"
    with anyio.fail_after(LIMIT):
        async with ResilientClient(URL, protocol_version="2025-06-18", listen=False) as client:
            assert client.protocol_version == "2025-11-25"  # what the fake answers
    assert posts(switch)[0] == "initialize"
    assert "server/discover" not in posts(switch)


def test_versions_are_public_and_checked() -> None:
    assert mcp_resilient.STATELESS_VERSIONS == ("2026-07-28",)
    assert "2025-11-25" in mcp_resilient.HANDSHAKE_VERSIONS
    assert mcp_resilient.AUTO == "auto"
    for good in ("auto", "2026-07-28", "2025-11-25", "2025-03-26"):
        ResilientClient(URL, protocol_version=good)
    with pytest.raises(ValueError, match="auto"):
        ResilientClient(URL, protocol_version="2024-11-05")


def test_the_exchange_does_not_import_the_eras_at_runtime() -> None:
    """Arrows point down: eras use the session (exchange), never the other way round."""
    import ast
    import inspect

    from mcp_resilient import _exchange, _headers

    def runtime_imports(module: Any) -> set[str]:
        tree = ast.parse(inspect.getsource(module))
        found: set[str] = set()
        for node in tree.body:  # top level only: `if TYPE_CHECKING:` blocks are skipped
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                found.add(node.module or "")
        return found

    assert not {m for m in runtime_imports(_exchange) if m.startswith("_eras")}
    assert runtime_imports(_headers) <= {"errors"}  # header rules stand alone (typed errors)
