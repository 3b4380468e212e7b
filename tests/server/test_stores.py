"""What only the scaled-out stores do: cluster slots, replica-acknowledged writes, failover,
clients built by the user, and PostgreSQL transactions shared by a tool and its outcome.

The contract every store keeps (ledger, session state) is in test_ledger.py / test_kit.py,
which run on all five stores.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import pytest
from redis.asyncio import RedisCluster, Sentinel

from examples._services import PostgresProcess, RedisClusterProcess, RedisSentinelSet
from mcp_resilient.server import (
    LEDGER_STARTED_NOT_FINISHED,
    Ledger,
    LedgerError,
    NotReplicatedError,
    RedisStore,
    SessionState,
    StoreError,
)
from mcp_resilient.server._ledger import fingerprint

pytestmark = pytest.mark.anyio

FP = fingerprint("increment", {"by": 1})
BOUND = 60.0


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP a replica we started (replication stalls), SIGCONT it after."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


# -- Redis Cluster --------------------------------------------------------------------


async def test_cluster_keeps_a_session_in_one_slot_and_resumes_across_slots(
    redis_cluster: RedisClusterProcess,
) -> None:
    store = RedisStore(redis_cluster.url, prefix=prefix())
    try:
        assert (store.name, store.hash_tags, store.wait_replicas) == ("redis-cluster", True, 1)
        old = SessionState(store, "old-session")
        await old.incr("counter", 5)
        await old.append("notes", "a")
        await old.append("notes", "b")
        slots = {
            redis_cluster.slot_of(store.key(old.prefix + name))
            for name in ("counter", "notes", "__owner__", "__keys__")
        }
        assert len(slots) == 1, slots
        # Sessions land in different slots; resume copies between them.
        new = SessionState(store, "new-session")
        assert redis_cluster.slot_of(store.key(new.prefix + "counter")) not in slots
        await new.set("stale", "x")
        assert await new.take_over("old-session") is True
        assert await new.incr("counter") == 6
        assert await new.get_list("notes") == ["a", "b"]
        assert await new.get("stale") is None
        # A ledger record is a slot of its own, named by its key.
        record = store.key(f"{store.prefix}idem:scope:key-1")
        assert record == f"{store.prefix}idem:{{scope:key-1}}"
    finally:
        await store.close()


async def test_cluster_without_hash_tags_is_refused_cross_slot(
    redis_cluster: RedisClusterProcess,
) -> None:
    """Why the tags: the same session's keys spread over slots and Redis refuses the script."""
    store = RedisStore(redis_cluster.url, prefix=prefix(), hash_tags=False)
    try:
        session = f"{store.prefix}session:s:"
        names = iter(("a", "b", "c", "d", "e", "f"))

        async def write_all() -> None:
            for name in names:
                await store.set(session + name, "1", ttl=60, touch=session)

        with pytest.raises(StoreError, match="(?i)slot|cross|non local"):
            await write_all()
    finally:
        await store.close()


async def test_cluster_client_built_by_the_user(redis_cluster: RedisClusterProcess) -> None:
    node = redis_cluster.nodes[0]
    client = RedisCluster(host="127.0.0.1", port=node.port)  # no decode_responses
    store = RedisStore(client, prefix=prefix())
    try:
        ledger = Ledger(store)
        outcome = await ledger.run("scope", "k", FP, _answer('{"ok": 1}'))
        assert outcome == ('{"ok": 1}', True)
        assert await ledger.run("scope", "k", FP, _answer("other")) == ('{"ok": 1}', False)
        assert await SessionState(store, "u").incr("n") == 1
    finally:
        await store.close()


async def test_cluster_write_not_on_a_replica_is_not_acknowledged(
    redis_cluster: RedisClusterProcess,
) -> None:
    """Replica stalled: the claim is taken back ("not run"), and a re-send may run it."""
    store = RedisStore(redis_cluster.url, prefix=prefix(), wait_timeout=0.3)
    try:
        ledger = Ledger(store)
        record = ledger.record_key("scope", "stalled")
        primary = redis_cluster.primary_of(redis_cluster.slot_of(store.key(record)))
        runs = 0

        async def tool() -> str:
            nonlocal runs
            runs += 1
            return "done"

        with anyio.fail_after(BOUND):
            with stopped(redis_cluster.replica_of(primary).pid):
                with pytest.raises(LedgerError, match="not run"):
                    await ledger.run("scope", "stalled", FP, tool)
                assert await store.read(record) is None  # the claim was taken back
            assert runs == 0
            assert await ledger.run("scope", "stalled", FP, tool) == ("done", True)
    finally:
        await store.close()


# -- Redis with Sentinel ---------------------------------------------------------------


async def test_sentinel_outcome_not_on_the_replica_is_not_an_answer(
    redis_sentinel: RedisSentinelSet,
) -> None:
    """The tool ran, the replica never got the outcome: confirmed "started, never finished"."""
    store = RedisStore(redis_sentinel.url, prefix=prefix(), wait_timeout=0.3)
    try:
        assert (store.name, store.wait_replicas) == ("redis-sentinel", 1)
        ledger = Ledger(store)
        with anyio.fail_after(BOUND):

            async def tool() -> str:
                os.kill(redis_sentinel.replica.pid, signal.SIGSTOP)
                return "ran"

            try:
                with pytest.raises(LedgerError) as info:
                    await ledger.run("scope", "k", FP, tool)
            finally:
                os.kill(redis_sentinel.replica.pid, signal.SIGCONT)
            assert info.value.error.code == LEDGER_STARTED_NOT_FINISHED
            assert "ran" in str(info.value) and "no replica" in str(info.value)
        with pytest.raises(NotReplicatedError), stopped(redis_sentinel.replica.pid):
            await store.set(f"{store.prefix}x", "1", ttl=None, touch=None)
        # Without WAIT the same write is acknowledged (and could be lost on failover).
        plain = RedisStore(redis_sentinel.url, prefix=store.prefix, wait_replicas=0)
        try:
            with stopped(redis_sentinel.replica.pid):
                await plain.set(f"{store.prefix}x", "2", ttl=None, touch=None)
        finally:
            await plain.close()
    finally:
        await store.close()


async def test_sentinel_failover_the_store_follows_the_new_primary(
    redis_sentinel: RedisSentinelSet,
) -> None:
    sentinel = Sentinel([("127.0.0.1", redis_sentinel.sentinel_port)])
    store = RedisStore(sentinel.master_for(redis_sentinel.service), prefix=prefix())
    try:
        assert store.name == "redis-sentinel"
        state = SessionState(store, "s")
        assert await state.incr("n") == 1
        before = redis_sentinel.current_primary_port()
        await anyio.to_thread.run_sync(redis_sentinel.failover)
        assert redis_sentinel.current_primary_port() != before
        with anyio.fail_after(BOUND):
            while True:  # the old primary's connections break once: bounded retries
                try:
                    value = await state.incr("n")
                    break
                except StoreError:
                    await anyio.sleep(0.1)
        assert value == 2  # acknowledged with WAIT, so the replica had it
    finally:
        await store.close()


def _answer(text: str) -> Callable[[], Awaitable[str]]:
    async def tool() -> str:
        return text

    return tool


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
async def pg_store(postgres_server: PostgresProcess) -> AsyncIterator[object]:
    from mcp_resilient.server import PostgresStore

    store = PostgresStore(postgres_server.url, prefix=prefix())
    async with store.transaction() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, qty int)")
    try:
        yield store
    finally:
        await store.close()


async def _orders(store: object, order: str) -> int:
    async with store.transaction() as conn:  # type: ignore[attr-defined]
        cursor = await conn.execute("SELECT count(*) FROM orders WHERE id = %s", (order,))
        row = await cursor.fetchone()
        return int(row[0])


async def test_postgres_tool_rows_commit_with_the_outcome(pg_store: object) -> None:
    from mcp_resilient.server import PostgresStore

    assert isinstance(pg_store, PostgresStore)
    ledger = Ledger(pg_store)
    order = uuid.uuid4().hex
    seen_in_tool: list[int] = []

    async def place() -> str:
        async with pg_store.transaction() as conn:
            await conn.execute("INSERT INTO orders VALUES (%s, 1)", (order,))
        await SessionState(pg_store, "s").incr("placed")
        # Not yet visible outside: it commits with the outcome.
        seen_in_tool.append(await _outside_count(pg_store, order))
        return '{"placed": true}'

    assert await ledger.run("scope", order, FP, place) == ('{"placed": true}', True)
    assert seen_in_tool == [0]
    assert await _orders(pg_store, order) == 1
    assert await SessionState(pg_store, "s").get("placed") == "1"


async def test_postgres_failed_tool_leaves_no_rows(pg_store: object) -> None:
    ledger = Ledger(pg_store)  # type: ignore[arg-type]
    order = uuid.uuid4().hex

    async def place() -> str:
        async with pg_store.transaction() as conn:  # type: ignore[attr-defined]
            await conn.execute("INSERT INTO orders VALUES (%s, 1)", (order,))
        raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError, match="declined"):
        await ledger.run("scope", order, FP, place)
    assert await _orders(pg_store, order) == 0


async def test_postgres_schema_is_versioned_and_created_once(
    postgres_server: PostgresProcess,
) -> None:
    from mcp_resilient.server import PostgresStore
    from mcp_resilient.server._postgres import SCHEMA_VERSION

    table_prefix = f"v{uuid.uuid4().hex[:8]}_"
    stores = [PostgresStore(postgres_server.url, table_prefix=table_prefix) for _ in range(4)]
    try:
        async with anyio.create_task_group() as tg:  # replicas starting at once
            for store in stores:
                tg.start_soon(store.ping)
                tg.start_soon(store.get, "k")
        async with stores[0].transaction() as conn:
            cursor = await conn.execute(f"SELECT version FROM {table_prefix}schema_version")
            assert [row[0] for row in await cursor.fetchall()] == [SCHEMA_VERSION]
            await conn.execute(f"INSERT INTO {table_prefix}schema_version VALUES (99)")
        newer = PostgresStore(postgres_server.url, table_prefix=table_prefix)
        with pytest.raises(StoreError, match="schema version 99"):
            await newer.get("k")
        await newer.close()
    finally:
        for store in stores:
            await store.close()


async def _outside_count(store: object, order: str) -> int:
    """Count on a connection of its own (not the ledger's transaction)."""
    pool = store._pool  # type: ignore[attr-defined]
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM orders WHERE id = %s", (order,))
        row = await cursor.fetchone()
        return int(row[0])
