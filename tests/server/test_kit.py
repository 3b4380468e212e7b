"""add_resilience on an in-process FastMCP server: middleware, session state, resume, health."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest
from fastmcp import Client, Context, FastMCP
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from mcp_resilient.server import (
    IDEMPOTENCY_CAPABILITY,
    IDEMPOTENCY_META_KEY,
    LEDGER_KEY_CONFLICT,
    REPLAYED_META_KEY,
    STATE_ID_META_KEY,
    RedisStore,
    SessionState,
    Store,
    add_resilience,
)
from tests.rig import free_port

pytestmark = pytest.mark.anyio


def server(store: Store, **options: Any) -> tuple[FastMCP, dict[str, int]]:
    mcp = FastMCP("kit-test")
    runs = {"bump": 0, "peek": 0, "broken": 0}
    kit = add_resilience(mcp, store, **options)

    @mcp.tool
    async def bump(ctx: Context, by: int = 1) -> int:
        """Not idempotent: counts its runs."""
        runs["bump"] += 1
        return await kit.state(ctx).incr("n", by)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def peek() -> int:
        runs["peek"] += 1
        return runs["bump"]

    @mcp.tool
    async def broken() -> int:
        runs["broken"] += 1
        raise ToolError("it broke")

    return mcp, runs


def meta(key: str) -> dict[str, Any]:
    # FastMCP's client speaks 2026-07-28 and sends no state id: name one, as ours does.
    return {IDEMPOTENCY_META_KEY: key, STATE_ID_META_KEY: "kit-test-client"}


async def test_keyed_call_runs_once_and_replays(store: Store) -> None:
    mcp, runs = server(store)
    key = uuid.uuid4().hex
    async with Client(mcp) as client:
        first = await client.call_tool("bump", {"by": 2}, meta=meta(key))
        again = await client.call_tool("bump", {"by": 2}, meta=meta(key))
        other = await client.call_tool("bump", {"by": 2}, meta=meta(uuid.uuid4().hex))
        unkeyed = await client.call_tool("bump", {"by": 2}, meta={STATE_ID_META_KEY: "c"})
    assert runs["bump"] == 3
    assert first.data == again.data
    assert (first.meta or {}).get(REPLAYED_META_KEY) is None
    assert (again.meta or {})[REPLAYED_META_KEY] is True
    assert other.data is not None and unkeyed.data is not None


async def test_tool_errors_are_replayed_not_rerun(store: Store) -> None:
    mcp, runs = server(store)
    key = uuid.uuid4().hex
    async with Client(mcp) as client:
        for _ in range(2):
            with pytest.raises(ToolError, match="it broke"):
                await client.call_tool("broken", meta=meta(key))
    assert runs["broken"] == 1


async def test_read_only_tools_skip_the_ledger(store: Store) -> None:
    mcp, runs = server(store)
    key = uuid.uuid4().hex
    async with Client(mcp) as client:
        await client.call_tool("peek", meta=meta(key))
        await client.call_tool("peek", meta=meta(key))
    assert runs["peek"] == 2


async def test_key_reused_with_other_arguments_is_refused(store: Store) -> None:
    mcp, runs = server(store)
    key = uuid.uuid4().hex
    async with Client(mcp) as client:
        await client.call_tool("bump", {"by": 1}, meta=meta(key))
        with pytest.raises(MCPError) as caught:
            await client.call_tool("bump", {"by": 5}, meta=meta(key))
    assert caught.value.code == LEDGER_KEY_CONFLICT
    assert runs["bump"] == 1


async def test_idempotency_off_means_no_ledger_and_no_capability(store: Store) -> None:
    mcp, runs = server(store, idempotency=False)
    key = uuid.uuid4().hex
    async with Client(mcp) as client:
        await client.call_tool("bump", meta=meta(key))
        await client.call_tool("bump", meta=meta(key))
    assert runs["bump"] == 2
    assert IDEMPOTENCY_CAPABILITY not in mcp.experimental_capabilities
    on, _ = server(store)
    assert on.experimental_capabilities[IDEMPOTENCY_CAPABILITY]["metaKey"] == IDEMPOTENCY_META_KEY


async def test_session_state_and_resume_bound_to_the_principal(store: Store) -> None:
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    alice = SessionState(store, old, principal="principal:issuer:alice")
    assert await alice.incr("counter", 3) == 3
    assert await alice.append("notes", "hello") == 1
    assert alice.prefix == f"{store.prefix}session:{old}:"

    mallory = SessionState(store, uuid.uuid4().hex, principal="principal:issuer:mallory")
    with pytest.raises(ToolError, match="another principal"):
        await mallory.take_over(old)
    assert await mallory.get("counter") is None

    again = SessionState(store, new, principal="principal:issuer:alice")
    await again.set("counter", "99")
    assert await again.take_over(old) is True
    assert (await again.get("counter"), await again.get_list("notes")) == ("3", ["hello"])
    assert await again.take_over(old) is True  # repeatable: replaces, never adds
    assert await again.get("counter") == "3"
    assert await again.take_over(uuid.uuid4().hex) is False


async def test_session_state_ttl_slides_over_all_keys(store: Store) -> None:
    session = SessionState(store, uuid.uuid4().hex, ttl=1.0)
    await session.set("a", "1")
    for _ in range(4):
        # Each write re-arms every key of the session, so "a" outlives its own TTL.
        await anyio.sleep(0.4)
        await session.incr("b")
    assert await session.get("a") == "1"
    with anyio.fail_after(10):
        while await session.get("a") is not None:
            await anyio.sleep(0.1)
    assert await session.get("b") is None


async def test_health_checks_the_store(store: Store) -> None:
    mcp, _ = server(store, health_info=lambda: {"instance": "x"})
    app = mcp.http_app(path="/mcp")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as http:
        body = (await http.get("/health")).json()
    assert body["status"] == "ok" and body["store"] == store.name and body["instance"] == "x"

    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)
    broken, _ = server(down)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=broken.http_app(path="/mcp")),
        base_url="http://127.0.0.1",
    ) as http:
        response = await http.get("/health")
    await down.close()
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_principal_comes_from_the_access_token() -> None:
    """Keys and sessions are scoped by the token's issuer and subject; no token: anonymous."""
    from fastmcp.server.auth import AccessToken
    from mcp.server.auth.middleware.auth_context import auth_context_var
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

    from mcp_resilient.server import default_principal

    assert default_principal() == "anonymous"

    def as_user(subject: str) -> str:
        token = AccessToken(
            token="t",
            client_id="shared-client",
            scopes=[],
            claims={"iss": "https://issuer.example", "sub": subject},
        )
        reset = auth_context_var.set(AuthenticatedUser(token))
        try:
            return default_principal()
        finally:
            auth_context_var.reset(reset)

    alice, bob = as_user("alice"), as_user("bob")
    assert alice == "principal:https://issuer.example:alice"
    assert alice != bob  # one OAuth client, two users: two scopes


async def test_secrets_stay_out_of_health_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down, a password in its URL: /health, the JSON-RPC errors clients get and the
    logs carry neither the password nor the address; logs never carry idempotency keys."""
    password, port = "S3cretPW", free_port()
    down = RedisStore(f"redis://app:{password}@127.0.0.1:{port}/0", socket_timeout=0.5)
    mcp, _ = server(down)
    key = f"key-{uuid.uuid4().hex}"
    caplog.set_level("DEBUG", logger="mcp_resilient")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mcp.http_app(path="/mcp")), base_url="http://127.0.0.1"
    ) as http:
        health = await http.get("/health")
    async with Client(mcp) as client:
        with pytest.raises(MCPError) as keyed:  # the ledger's JSON-RPC error
            await client.call_tool("bump", meta=meta(key))
        unkeyed = await client.call_tool(
            "bump", meta={STATE_ID_META_KEY: "c"}, raise_on_error=False
        )
    await down.close()
    assert health.status_code == 503
    assert health.json()["error"] == "the redis store did not answer"
    said = [health.text, str(keyed.value), str(keyed.value.data), str(unkeyed.content)]
    assert "ledger unavailable" in said[1] and unkeyed.is_error
    for text in said:
        assert password not in text and str(port) not in text, text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "unavailable" in logged  # the detail went to the log, redacted
    assert password not in logged and key not in logged, logged
    assert "app:***@127.0.0.1" in logged
