"""The server kit on a real FastMCP server (tests/servers/kit_server.py) with Redis.

- principals: two token-verified users never reach each other's state, in both eras;
- refusals (bad arguments, unknown tool) under a key: a re-send gets the same error;
- a 2026-07-28 elicitation round under a key, its final answer lost: asked once, acted
  once, and the caller gets the real result.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types
import pytest

from mcp_resilient import HANDSHAKE_VERSIONS, ResilientClient, RetryPolicy
from mcp_resilient.server import RedisStore
from tests.integration.conftest import ServerFactory
from tests.rig import RedisProcess
from tests.rig.faultproxy import Cut, Exchange, FaultProxy

pytestmark = pytest.mark.anyio

ERAS = {"handshake": HANDSHAKE_VERSIONS[0], "auto": "auto"}
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
TOKENS = "alice-token=alice,bob-token=bob"
MODULE = "tests.servers.kit_server"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def kit_env(redis_server: RedisProcess) -> dict[str, str]:
    return {"KIT_STORE": redis_server.url, "KIT_PREFIX": f"k{uuid.uuid4().hex[:12]}:"}


@pytest.fixture
async def kit_store(kit_env: dict[str, str]) -> AsyncIterator[RedisStore]:
    """The servers' store, to read what really ran (``exec:``/``asks:`` lists)."""
    store = RedisStore(kit_env["KIT_STORE"], prefix=kit_env["KIT_PREFIX"])
    try:
        yield store
    finally:
        await store.close()


def as_user(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def text(result: mcp_types.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, mcp_types.TextContent))


def value(result: mcp_types.CallToolResult) -> Any:
    assert result.is_error is False, text(result)
    assert result.structured_content is not None, result
    return result.structured_content["result"]


@pytest.mark.parametrize("era", ["auto", "handshake"])
async def test_principals_never_share_state(
    server_factory: ServerFactory, kit_env: dict[str, str], era: str
) -> None:
    server = server_factory("kit", env={**kit_env, "KIT_TOKENS": TOKENS}, module=MODULE)
    shared = f"conversation-{uuid.uuid4().hex}"
    version = ERAS[era]
    async with (
        ResilientClient(
            server.url, headers=as_user("alice-token"), protocol_version=version, state_id=shared
        ) as alice,
        ResilientClient(
            server.url, headers=as_user("bob-token"), protocol_version=version, state_id=shared
        ) as bob,
    ):
        assert value(await alice.call_tool("add", {"by": 3})) == 3
        assert value(await alice.call_tool("remember", {"note": "alice's secret"})) == 1
        if era == "auto":
            # Bob names alice's state id: every read and write is refused.
            assert alice.protocol_version == "2026-07-28"
            for name, args in [("balance", {}), ("notes", {}), ("add", {"by": 1})]:
                refused = await bob.call_tool(name, args)
                assert refused.is_error and "another principal" in text(refused), text(refused)
        else:
            # Bob's resume_session of alice's session is refused, and hers stays hers.
            assert alice.session_id is not None
            refused = await bob.call_tool("resume_session", {"old_session_id": alice.session_id})
            assert refused.is_error and "another principal" in text(refused), text(refused)
            assert value(await bob.call_tool("notes")) == []
            assert value(await bob.call_tool("balance")) == 0
        assert value(await alice.call_tool("balance")) == 3
        assert value(await alice.call_tool("notes")) == ["alice's secret"]


@pytest.mark.parametrize("era", ["auto", "handshake"])
async def test_refusals_under_a_key_are_the_same_on_a_resend(
    server_factory: ServerFactory, kit_env: dict[str, str], kit_store: RedisStore, era: str
) -> None:
    server = server_factory("kit", env=kit_env, module=MODULE)
    async with ResilientClient(server.url, protocol_version=ERAS[era], retry=FAST) as client:
        for name, args in [("strict", {"n": "not a number", "call_id": "x"}), ("nope", {})]:
            key = uuid.uuid4().hex
            first = await client.call_tool(name, args, idempotency_key=key)
            again = await client.call_tool(name, args, idempotency_key=key)
            assert first.is_error and again.is_error, (first, again)
            assert text(first) == text(again), (text(first), text(again))
            assert ("valid integer" in text(first)) or ("Unknown tool" in text(first))
        # Nothing was recorded as started: the same key with good arguments runs once.
        key, call_id = uuid.uuid4().hex, uuid.uuid4().hex
        bad = await client.call_tool("strict", {"n": "x", "call_id": call_id}, idempotency_key=key)
        assert bad.is_error
        good = await client.call_tool("strict", {"n": 7, "call_id": call_id}, idempotency_key=key)
        assert value(good) == 7
    assert await kit_store.get_list(f"{kit_store.prefix}exec:{call_id}") == ["kit"]


async def test_elicitation_round_under_a_key_asks_once_and_acts_once(
    server_factory: ServerFactory, kit_env: dict[str, str], kit_store: RedisStore
) -> None:
    server = server_factory("kit", env=kit_env, module=MODULE)
    calls = {"n": 0}

    def lose_the_final_answer(exchange: Exchange) -> Cut | None:
        if exchange.request is None or exchange.request.headers.get("mcp-method") != "tools/call":
            return None
        calls["n"] += 1
        # Leg 1 asks; leg 2 (with the answer) acts: its answer is lost once it is complete.
        return Cut(at_byte=0, hold=True) if calls["n"] == 2 else None

    asked: list[str] = []

    async def answer(params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        asked.append(params.message)
        return mcp_types.ElicitResult(action="accept", content={"ok": True})

    call_id = uuid.uuid4().hex
    async with (
        FaultProxy(server.host, server.port, policy=lose_the_final_answer) as proxy,
        ResilientClient(proxy.url, retry=FAST, elicitation_handler=answer) as client,
    ):
        with anyio.fail_after(60):
            result = await client.call_tool(
                "confirm_then_act", {"item": "the order", "call_id": call_id}
            )
        assert client.protocol_version == "2026-07-28"
        cuts = proxy.stats.cuts
    assert value(result) == "acted on the order"
    assert cuts == 1 and calls["n"] >= 3  # the final leg was lost once and sent again
    assert asked == ["really act on the order?"]
    assert await kit_store.get_list(f"{kit_store.prefix}asks:{call_id}") == ["kit"]
    assert await kit_store.get_list(f"{kit_store.prefix}exec:{call_id}") == ["kit"]
