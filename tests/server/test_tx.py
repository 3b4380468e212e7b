"""@transactional tools on both stores: staged writes, one commit with the outcome,
optimistic concurrency, and a dead owner's run taken over and run afresh."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from fastmcp import Client, Context, FastMCP
from fastmcp.exceptions import ToolError

from examples._launch import REPO_ROOT
from mcp_resilient.server import (
    IDEMPOTENCY_META_KEY,
    LEDGER_STARTED_NOT_FINISHED,
    REPLAYED_META_KEY,
    Commit,
    Ledger,
    LedgerError,
    SessionState,
    Store,
    add_resilience,
    after_commit,
    session_state,
    transactional,
)
from mcp_resilient.server._ledger import fingerprint

pytestmark = pytest.mark.anyio

BOUND = 90.0  # generous: a loaded machine starts the owner process slowly
LEGACY = "legacy"  # the handshake era: a session to keep state in
FP = fingerprint("increment", {"by": 1})


def meta(key: str) -> dict[str, Any]:
    return {IDEMPOTENCY_META_KEY: key}


# -- the ledger --------------------------------------------------------------------------


async def test_owner_killed_mid_run_is_run_afresh(
    store: Store, store_spec: tuple[str, str, str]
) -> None:
    """A real process claims a transactional record and is SIGKILLed before committing."""
    kind, location, prefix = store_spec
    k = uuid.uuid4().hex
    lease = 1.0
    command = [sys.executable, "-m", "tests.server._owner", kind, location, prefix]
    async with await anyio.open_process(
        [*command, "anonymous", k, str(lease), "transactional"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    ) as owner:
        assert owner.stdout is not None
        seen = b""
        with anyio.fail_after(BOUND):
            while b"running" not in seen:
                seen += await owner.stdout.receive()
        owner.kill()
        await owner.wait()
    ledger = Ledger(store, lease=lease, wait=BOUND, poll_interval=0.02)
    record_key = ledger.record_key("anonymous", k)
    runs = 0

    async def call(record: str | None, who: str | None) -> str:
        nonlocal runs
        runs += 1
        commit = Commit(record=record, owner=who or "", outcome='"ok"', record_ttl=60)
        result = await store.commit(commit)
        assert result == "committed"
        return '"ok"'

    with anyio.fail_after(BOUND):
        assert await ledger.run_transactional(record_key, k, FP, call) == ('"ok"', True)
    assert runs == 1
    # And now it is done: replayed, not run.
    assert await ledger.run_transactional(record_key, k, FP, call) == ('"ok"', False)
    assert runs == 1
    # A plain ledger run under a dead plain owner still says "started, never finished".
    plain = uuid.uuid4().hex
    await store.claim(ledger.record_key("anonymous", plain), "x", FP, lease=0.01, ttl=60)
    with pytest.raises(LedgerError) as caught:
        await ledger.run("anonymous", plain, FP, lambda: anyio.lowlevel.checkpoint())  # type: ignore[arg-type,return-value]
    assert caught.value.code == LEDGER_STARTED_NOT_FINISHED


# -- tools through add_resilience ------------------------------------------------------


def server(store: Store, **options: Any) -> tuple[FastMCP, dict[str, Any]]:
    mcp = FastMCP("tx-test")
    seen: dict[str, Any] = {"runs": 0, "after": 0, "fail_once": set()}
    add_resilience(mcp, store, **options)

    @mcp.tool
    @transactional
    async def move(ctx: Context, amount: int, fail: bool = False) -> dict[str, Any]:
        """Two writes and a list append; reads see the staged writes."""
        seen["runs"] += 1
        state = session_state(ctx)
        a = await state.incr("a", -amount)
        b = await state.incr("b", amount)
        assert await state.get("a") == str(a)  # the staged value, not the store's
        length = await state.append("log", f"{amount}")
        if fail:
            raise ToolError("refused")

        async def later() -> None:
            seen["after"] += 1

        after_commit(later)
        return {"a": a, "b": b, "log": length}

    @mcp.tool
    @transactional(attempts=50)
    async def read_modify_write(ctx: Context) -> int:
        """get then set: a lost update unless the commit checks what it read."""
        state = session_state(ctx)
        value = int(await state.get("rmw") or 0) + 1
        await anyio.lowlevel.checkpoint()  # let the others read the same value
        await state.set("rmw", str(value))
        return value

    @mcp.tool
    @transactional(attempts=1)
    async def contended(ctx: Context) -> int:
        state = session_state(ctx)
        value = int(await state.get("c") or 0) + 1
        await anyio.sleep(0.05)
        await state.set("c", str(value))
        return value

    @mcp.tool(annotations={"readOnlyHint": True})
    async def peek(ctx: Context) -> dict[str, Any]:
        state = session_state(ctx)
        return {
            "a": await state.get("a"),
            "b": await state.get("b"),
            "log": await state.get_list("log"),
            "rmw": await state.get("rmw"),
            "c": await state.get("c"),
        }

    return mcp, seen


async def test_transactional_tool_commits_with_its_outcome(store: Store) -> None:
    mcp, seen = server(store)
    key = uuid.uuid4().hex
    async with Client(mcp, mode=LEGACY) as client:
        first = await client.call_tool("move", {"amount": 3}, meta=meta(key))
        assert first.data == {"a": -3, "b": 3, "log": 1}
        again = await client.call_tool("move", {"amount": 3}, meta=meta(key))
        assert again.data == first.data
        assert (again.meta or {}).get(REPLAYED_META_KEY) is True
        assert seen["runs"] == 1 and seen["after"] == 1
        unkeyed = await client.call_tool("move", {"amount": 1})
        assert unkeyed.data == {"a": -4, "b": 4, "log": 2}
        peek = await client.call_tool("peek")
        assert peek.data["log"] == ["3", "1"]


async def test_an_error_writes_nothing(store: Store) -> None:
    mcp, seen = server(store)
    key = uuid.uuid4().hex
    async with Client(mcp, mode=LEGACY) as client:
        for _ in range(2):  # the re-send gets the same error, and runs nothing
            with pytest.raises(ToolError, match="refused"):
                await client.call_tool("move", {"amount": 5, "fail": True}, meta=meta(key))
        assert seen["runs"] == 1 and seen["after"] == 0
        peek = await client.call_tool("peek")
        assert peek.data == {"a": None, "b": None, "log": [], "rmw": None, "c": None}


async def test_concurrent_runs_never_lose_an_update(store: Store) -> None:
    mcp, _seen = server(store)
    async with Client(mcp, mode=LEGACY) as client:
        values: list[int] = []

        async def one(i: int) -> None:
            result = await client.call_tool("read_modify_write", {}, meta=meta(f"rmw-{i}"))
            values.append(result.data)

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(one, i)
        peek = await client.call_tool("peek")
    assert sorted(values) == list(range(1, 13))  # each saw its own increment
    assert peek.data["rmw"] == "12"


async def test_conflicts_beyond_the_bound_apply_nothing(store: Store) -> None:
    mcp, _seen = server(store)
    errors: list[Exception] = []
    values: list[int] = []
    async with Client(mcp, mode=LEGACY) as client:

        async def one(i: int) -> None:
            try:
                values.append((await client.call_tool("contended", {}, meta=meta(f"c{i}"))).data)
            except Exception as exc:  # the client raises the JSON-RPC error
                errors.append(exc)

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(one, i)
        peek = await client.call_tool("peek")
    assert errors, "four concurrent one-attempt runs: some must conflict"
    assert all("nothing was applied" in str(e) for e in errors), errors
    assert sorted(values) == list(range(1, len(values) + 1))
    assert peek.data["c"] == str(len(values))  # exactly the runs that answered


async def test_session_state_outside_a_transaction_is_unchanged(store: Store) -> None:
    mcp = FastMCP("plain")
    kit = add_resilience(mcp, store)

    @mcp.tool
    async def plain(ctx: Context) -> bool:
        state = session_state(ctx)
        return isinstance(state, SessionState) and state.store is kit.store

    async with Client(mcp, mode=LEGACY) as client:
        assert (await client.call_tool("plain")).data is True


async def test_transactional_marks_the_registered_tool() -> None:
    mcp = FastMCP("order")

    @transactional
    @mcp.tool
    async def over() -> int:  # FastMCP 4's decorator hands the function back
        return 1

    @mcp.tool
    @transactional(attempts=3)
    async def under() -> int:
        return 1

    from mcp_resilient.server._tx import transactional_options

    assert transactional_options(await mcp.get_tool("over")) is not None
    assert transactional_options(await mcp.get_tool("under")).attempts == 3  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="under @mcp.tool"):
        transactional(await mcp.get_tool("under"))  # type: ignore[type-var]
