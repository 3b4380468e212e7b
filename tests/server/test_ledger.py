"""The idempotency ledger on both stores: one run per key, whatever the duplicates do."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from examples._launch import REPO_ROOT
from mcp_resilient.server import (
    LEDGER_IN_PROGRESS,
    LEDGER_KEY_CONFLICT,
    LEDGER_STARTED_NOT_FINISHED,
    LEDGER_UNAVAILABLE,
    Ledger,
    LedgerError,
    RedisStore,
    SQLiteStore,
    Store,
)
from mcp_resilient.server._ledger import fingerprint
from tests.rig import free_port

pytestmark = pytest.mark.anyio

FP = fingerprint("increment", {"by": 1})
BOUND = 30.0


class Tool:
    """A tool body that counts its runs and can be held at a gate."""

    def __init__(self, answer: str = '{"result": {"value": 1}}') -> None:
        self.runs = 0
        self.answer = answer
        self.gate = anyio.Event()
        self.started = anyio.Event()
        self.gate.set()

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        await self.gate.wait()
        return self.answer


def key() -> str:
    return uuid.uuid4().hex


class CountingStore:
    """Forwards to a store, counting claims (to know when every duplicate has arrived)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.claims = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def claim(self, *args: object, **kwargs: object) -> object:
        self.claims += 1
        return await self.inner.claim(*args, **kwargs)  # type: ignore[arg-type]


async def test_concurrent_duplicates_run_once(store: Store) -> None:
    counting = CountingStore(store)
    ledger = Ledger(counting, lease=5, poll_interval=0.01)  # type: ignore[arg-type]
    tool = Tool()
    tool.gate = anyio.Event()
    k = key()
    outcomes: list[tuple[str, bool]] = []

    async def call() -> None:
        outcomes.append(await ledger.run("anonymous", k, FP, tool))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(call)
            await tool.started.wait()
            # Every duplicate has claimed (and lost) before the first run finishes.
            while counting.claims < 8:
                await anyio.sleep(0.01)
            assert not outcomes
            tool.gate.set()
    assert tool.runs == 1
    assert len(outcomes) == 8
    assert {o for o, _ in outcomes} == {tool.answer}
    assert sorted(ran for _, ran in outcomes) == [False] * 7 + [True]


async def test_duplicate_after_completion_gets_the_stored_outcome(store: Store) -> None:
    ledger = Ledger(store)
    first, second = Tool('{"n": 1}'), Tool('{"n": 2}')
    k = key()
    assert await ledger.run("anonymous", k, FP, first) == ('{"n": 1}', True)
    assert await ledger.run("anonymous", k, FP, second) == ('{"n": 1}', False)
    assert (first.runs, second.runs) == (1, 0)


async def test_owner_killed_mid_run_is_reported_not_rerun(
    store: Store, store_spec: tuple[str, str, str]
) -> None:
    """A real process claims the key, starts the tool and is SIGKILLed; its lease runs out."""
    kind, location, prefix = store_spec
    k = key()
    lease = 1.0
    command = [sys.executable, "-m", "tests.server._owner", kind, location, prefix]
    async with await anyio.open_process(
        [*command, "anonymous", k, str(lease)], cwd=REPO_ROOT, stdout=subprocess.PIPE
    ) as owner:
        assert owner.stdout is not None
        seen = b""
        with anyio.fail_after(BOUND):
            while b"running" not in seen:
                seen += await owner.stdout.receive()
        owner.kill()  # SIGKILL: no cleanup, the lease just stops being renewed
        await owner.wait()
    ledger = Ledger(store, lease=lease, wait=BOUND, poll_interval=0.02)
    tool = Tool()
    with anyio.fail_after(BOUND), pytest.raises(LedgerError) as caught:
        await ledger.run("anonymous", k, FP, tool)
    assert caught.value.code == LEDGER_STARTED_NOT_FINISHED
    assert "started and never finished" in caught.value.message
    assert tool.runs == 0
    # And it stays that way: the ledger never lets a dead run be run again.
    with pytest.raises(LedgerError) as again:
        await ledger.run("anonymous", k, FP, tool)
    assert again.value.code == LEDGER_STARTED_NOT_FINISHED
    assert tool.runs == 0


async def test_live_owner_keeps_its_lease(store: Store) -> None:
    """A run longer than the lease is not mistaken for a dead one (the owner renews)."""
    ledger = Ledger(store, lease=0.3, wait=BOUND, poll_interval=0.02)
    tool = Tool()
    tool.gate = anyio.Event()
    k = key()
    results: list[tuple[str, bool]] = []

    async def duplicate() -> None:
        results.append(await ledger.run("anonymous", k, FP, Tool()))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: ledger.run("anonymous", k, FP, tool))
            await tool.started.wait()
            tg.start_soon(duplicate)
            # Several lease periods pass while the first run holds.
            await anyio.sleep(1.0)
            assert not results
            tool.gate.set()
    assert results == [(tool.answer, False)]


async def test_wait_is_bounded(store: Store) -> None:
    ledger = Ledger(store, lease=5, wait=0.3, poll_interval=0.02)
    tool = Tool()
    tool.gate = anyio.Event()
    k = key()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: ledger.run("anonymous", k, FP, tool))
            await tool.started.wait()
            with pytest.raises(LedgerError) as caught:
                await ledger.run("anonymous", k, FP, Tool())
            tool.gate.set()
    assert caught.value.code == LEDGER_IN_PROGRESS
    assert caught.value.data["retryAfterMs"] > 0


async def test_record_expires_after_its_ttl(store: Store) -> None:
    ledger = Ledger(store, result_ttl=0.5)
    k = key()
    first, second = Tool('{"n": 1}'), Tool('{"n": 2}')
    assert await ledger.run("anonymous", k, FP, first) == ('{"n": 1}', True)
    record_key = ledger.record_key("anonymous", k)
    with anyio.fail_after(BOUND):
        while await store.read(record_key) is not None:
            await anyio.sleep(0.05)
    # Past the TTL the key is new again.
    assert await ledger.run("anonymous", k, FP, second) == ('{"n": 2}', True)
    assert (first.runs, second.runs) == (1, 1)


async def test_keys_of_another_principal_are_not_shared(store: Store) -> None:
    ledger = Ledger(store)
    k = key()
    alice, bob = Tool('"alice"'), Tool('"bob"')
    assert await ledger.run("principal::alice", k, FP, alice) == ('"alice"', True)
    # Same key, other principal: its own run, never alice's result.
    assert await ledger.run("principal::bob", k, FP, bob) == ('"bob"', True)
    assert await ledger.run("principal::alice", k, FP, Tool()) == ('"alice"', False)
    assert (alice.runs, bob.runs) == (1, 1)


async def test_key_reused_for_another_call_is_a_conflict(store: Store) -> None:
    ledger = Ledger(store)
    k = key()
    await ledger.run("anonymous", k, FP, Tool())
    tool = Tool()
    with pytest.raises(LedgerError) as caught:
        await ledger.run("anonymous", k, fingerprint("increment", {"by": 2}), tool)
    assert caught.value.code == LEDGER_KEY_CONFLICT
    assert tool.runs == 0


async def test_failed_run_releases_its_lease_at_once(store: Store) -> None:
    """A run that raises (cancelled, crashed) ends its lease: duplicates learn it at once."""
    ledger = Ledger(store, lease=60, wait=BOUND, poll_interval=0.02)
    k = key()

    async def crash() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await ledger.run("anonymous", k, FP, crash)
    tool = Tool()
    with anyio.fail_after(5), pytest.raises(LedgerError) as caught:
        await ledger.run("anonymous", k, FP, tool)
    assert caught.value.code == LEDGER_STARTED_NOT_FINISHED
    assert tool.runs == 0


async def _down_store(kind: str, tmp_path: object) -> tuple[Store, sqlite3.Connection | None]:
    if kind == "redis":
        # Nothing listens there: every operation fails to connect.
        return RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1.0), None
    path = f"{tmp_path}/locked.sqlite3"
    store = SQLiteStore(path, busy_timeout=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file: writes time out
    return store, blocker


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_store_down_is_a_clear_error_and_the_call_does_not_run(
    kind: str, tmp_path: object
) -> None:
    store, blocker = await _down_store(kind, tmp_path)
    tool = Tool()
    try:
        with anyio.fail_after(BOUND), pytest.raises(LedgerError) as caught:
            await Ledger(store).run("anonymous", key(), FP, tool)
    finally:
        if blocker is not None:
            blocker.close()
        await store.close()
    assert caught.value.code == LEDGER_UNAVAILABLE
    assert "the call was not run" in caught.value.message
    assert tool.runs == 0


def _open_store_together(path: str, barrier: Any) -> None:
    barrier.wait(timeout=30)
    SQLiteStore(path)


def test_replicas_starting_on_one_sqlite_file_at_once(tmp_path: Path) -> None:
    """Several processes opening a fresh SQLite store together: none fails to start.

    Switching to WAL does not wait on SQLite's busy handler, so replicas of a cluster that
    start at the same moment used to die with "database is locked" now and then (about one
    process in twenty-five here).
    """
    context = multiprocessing.get_context("fork")  # the module is imported already: no lag
    failed = 0
    for trial in range(20):
        barrier = context.Barrier(6)
        path = str(tmp_path / f"trial-{trial}.sqlite3")
        procs = [
            context.Process(target=_open_store_together, args=(path, barrier)) for _ in range(6)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=60)
        failed += sum(proc.exitcode != 0 for proc in procs)
    assert failed == 0
