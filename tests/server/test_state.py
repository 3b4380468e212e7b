"""``session_state`` in both eras, bound to its principal (in-process FastMCP server)."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import anyio
import pytest
from fastmcp import Client, Context, FastMCP
from fastmcp.exceptions import ToolError

from mcp_resilient.server import (
    STATE_ID_META_KEY,
    RedisStore,
    SessionState,
    SQLiteStore,
    Store,
    add_resilience,
    session_state,
)

pytestmark = pytest.mark.anyio


def server(store: Store, **options: Any) -> FastMCP:
    mcp = FastMCP("state-test")
    add_resilience(mcp, store, **options)

    @mcp.tool
    async def charge(ctx: Context, amount: int) -> int:
        return await session_state(ctx).incr("balance", amount)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def balance(ctx: Context) -> int:
        return int(await session_state(ctx).get("balance") or 0)

    @mcp.tool
    async def stateless_work(ctx: Context) -> str:
        session_state(ctx)  # built but never used: fine without a state id
        return "done"

    return mcp


async def keys_under(store: Store, prefix: str) -> list[str]:
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            rows = conn.execute(
                "SELECT key FROM mcp_kv WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        return [str(row[0]) for row in rows]
    if store.name == "postgres":
        async with store.transaction() as conn:  # type: ignore[attr-defined]
            table = f"{store.table_prefix}kv"  # type: ignore[attr-defined]
            query = f"SELECT key FROM {table} WHERE starts_with(key, %s)"
            return [str(row[0]) for row in await (await conn.execute(query, (prefix,))).fetchall()]
    assert isinstance(store, RedisStore)
    return [str(key) async for key in store._redis.scan_iter(match=prefix + "*")]


def state(state_id: str) -> dict[str, Any]:
    return {STATE_ID_META_KEY: state_id}


async def test_state_id_carries_state_across_calls_in_the_new_era(store: Store) -> None:
    mcp = server(store)
    sid = uuid.uuid4().hex
    async with Client(mcp) as client:
        assert (await client.call_tool("charge", {"amount": 5}, meta=state(sid))).data == 5
        assert (await client.call_tool("balance", meta=state(sid))).data == 5
        assert (await client.call_tool("charge", {"amount": 2}, meta=state(sid))).data == 7
        # Another state id is another client's state.
        assert (await client.call_tool("balance", meta=state("other-" + sid))).data == 0
    # One state, its keys under the state id: nothing keyed on per-request session ids.
    assert await keys_under(store, f"{store.prefix}session:") == []
    names = {key.rsplit(":", 1)[1] for key in await keys_under(store, f"{store.prefix}state:")}
    assert names - {"__keys__"} == {"balance", "__owner__"}  # (Redis: plus the key index)


async def test_no_state_id_is_a_clear_error_and_writes_nothing(store: Store) -> None:
    mcp = server(store)
    async with Client(mcp) as client:
        with pytest.raises(ToolError, match="no state id.*io.github.mcp-resilient/stateId"):
            await client.call_tool("charge", {"amount": 5})
        with pytest.raises(ToolError, match="no state id"):
            await client.call_tool("balance")
        assert (await client.call_tool("stateless_work")).data == "done"
        with pytest.raises(ToolError, match="visible ASCII"):
            await client.call_tool("charge", {"amount": 1}, meta=state("has space"))
    assert await keys_under(store, store.prefix) == []  # no orphan keys


async def test_handshake_era_keys_state_on_the_session(store: Store) -> None:
    mcp = server(store)
    async with Client(mcp, mode="legacy") as client:
        assert (await client.call_tool("charge", {"amount": 2})).data == 2
        assert (await client.call_tool("charge", {"amount": 2})).data == 4
        assert (await client.call_tool("balance")).data == 4
    assert await keys_under(store, f"{store.prefix}state:") == []


async def test_another_principal_is_refused_reads_writes_and_resume(store: Store) -> None:
    sid = uuid.uuid4().hex
    alice = SessionState(store, sid, principal="principal:iss:alice", kind="state")
    bob = SessionState(store, sid, principal="principal:iss:bob", kind="state")
    assert await alice.incr("n", 3) == 3
    with pytest.raises(ToolError, match="another principal"):
        await bob.get("n")
    with pytest.raises(ToolError, match="another principal"):
        await bob.incr("n", 1)
    with pytest.raises(ToolError, match="another principal"):
        await bob.get_list("notes")
    # Bob's own session cannot take alice's over, and hers stays hers.
    old = uuid.uuid4().hex
    alice_session = SessionState(store, old, principal="principal:iss:alice")
    await alice_session.set("secret", "s")
    bob_session = SessionState(store, uuid.uuid4().hex, principal="principal:iss:bob")
    with pytest.raises(ToolError, match="another principal"):
        await bob_session.take_over(old)
    assert await bob_session.get("secret") is None
    assert await alice_session.get("secret") == "s"
    assert await alice.get("n") == "3"


async def test_state_written_after_expiry_is_bound_again(store: Store) -> None:
    """The owner marker comes back with the first write after the state expired, so
    ``resume_session`` finds it (Redis lost it: the process remembered it had bound)."""
    sid = uuid.uuid4().hex
    owned: dict[str, tuple[str, float]] = {}
    short = SessionState(store, sid, principal="p", ttl=0.3, _owned=owned)
    await short.set("a", "1")
    with anyio.fail_after(20):
        while await store.get(short.prefix + "a") is not None:
            await anyio.sleep(0.02)
    long = SessionState(store, sid, principal="p", ttl=600, _owned=owned)
    await long.set("a", "2")
    assert await long.owner() is not None
    successor = SessionState(store, uuid.uuid4().hex, principal="p")
    assert await successor.take_over(sid) is True
    assert await successor.get("a") == "2"
