"""The keyed load of test_exactly_once while the Redis primary doing the most work fails over.

Three example servers keep their state and ledger in a Redis Cluster (3 primaries, a
replica each). Under the steady load of non-idempotent increments, the worst case of
asynchronous replication is staged: the busiest primary's replica stalls (SIGSTOP, its
replication link cut), the primary keeps taking writes, then the primary dies (SIGKILL)
and the stalled replica takes over with whatever it had. With ``WAIT`` (the cluster default) nothing the store
acknowledged was only on the dead primary: no call ran twice and every acknowledged
increment is there. Without it, acknowledged increments vanish with the old primary.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from examples._services import RedisClusterProcess, _ClusterNode, _info, redis_command
from mcp_resilient import OutcomeUnknownError, ResilientClient, RetryPolicy
from mcp_resilient.errors import MCPError
from tests.integration.conftest import running_cluster, running_redis_cluster
from tests.rig import ServerCluster
from tests.rig.ops import LoadWorker, execution_counts, progress_after, wait_until

pytestmark = pytest.mark.anyio

WORKERS = 4
LEASE = "2"
BOUND = 300.0
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
START = 120.0  # seconds for three servers to boot on a loaded 2-core machine
ERAS = {"handshake": "2025-11-25", "stateless": "2026-07-28"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def own_redis_cluster() -> Generator[RedisClusterProcess, None, None]:
    """A cluster of this test's own: it loses a primary."""
    yield from running_redis_cluster()


@dataclass
class Worker(LoadWorker):
    """The shared load worker; also counts calls that failed without being acknowledged."""

    failures: list[str] = field(default_factory=list)
    """Client errors that say the call was not run or not answered (not outcome-unknown)."""

    def __post_init__(self) -> None:
        self.tool_errors = {}

    @property
    def failed(self) -> int:
        return len(self.failures) + len(self.tool_errors or {})

    async def drive(self, client: ResilientClient, stop: anyio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run(client, stop)
            except MCPError as exc:
                if isinstance(exc, OutcomeUnknownError):
                    raise
                self.failures.append(f"{type(exc).__name__}: {str(exc)[:160]}")
                await anyio.sleep(0.05)


def _busiest_primary(cluster: RedisClusterProcess, before: dict[int, int]) -> _ClusterNode:
    """The primary whose command count grew most since ``before``."""
    grown = {
        node.port: _commands(node.port) - before.get(node.port, 0)
        for node in cluster.nodes
        if _info(node.port, "replication").get("role") == "master"
    }
    port = max(grown, key=lambda p: grown[p])
    return next(n for n in cluster.nodes if n.port == port)


def _commands(port: int) -> int:
    return int(_info(port, "stats").get("total_commands_processed", "0"))


def _offset(port: int) -> int:
    return int(_info(port, "replication").get("master_repl_offset", "0"))


async def failover_under_load(
    cluster: RedisClusterProcess, servers: ServerCluster, era: str
) -> tuple[list[Worker], dict[str, int]]:
    workers = [Worker(f"w{i}") for i in range(WORKERS)]
    stop = anyio.Event()

    def attempts() -> int:
        return sum(w.calls + w.failed for w in workers)

    async def worker(w: Worker) -> None:
        async with ResilientClient(
            servers.urls, retry=FAST, timeout=60, protocol_version=ERAS[era]
        ) as client:
            await w.drive(client, stop)

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(worker, w)
            before = {n.port: _commands(n.port) for n in cluster.nodes}
            await progress_after(attempts, 4 * WORKERS, "calls", 120)
            primary = _busiest_primary(cluster, before)
            replica = cluster.replica_of(primary)
            # Replication stops: the replica is frozen and its link cut (what the kernel
            # had buffered for it still arrives), so the primary alone has what follows.
            os.kill(replica.pid, signal.SIGSTOP)
            try:
                redis_command(primary.port, "CLIENT", "KILL", "TYPE", "replica")
                stalled_at = _offset(primary.port)

                async def diverged() -> bool:
                    return _offset(primary.port) > stalled_at + 2000

                await wait_until(diverged, "writes on the primary only", 120)
                await progress_after(attempts, 2 * WORKERS, "calls", 120)
                primary.kill()
            finally:
                os.kill(replica.pid, signal.SIGCONT)

            async def promoted() -> bool:
                info = await anyio.to_thread.run_sync(_info, replica.port, "replication")
                return info.get("role") == "master"

            await wait_until(promoted, "the replica took over", 60)
            await progress_after(attempts, 4 * WORKERS, "calls", 120)
            stop.set()
    ran = await execution_counts(servers[0], [cid for w in workers for cid in w.acked + w.unknown])
    return workers, ran


def _report(label: str, workers: list[Worker], ran: dict[str, int]) -> tuple[int, int]:
    acked = [cid for w in workers for cid in w.acked]
    duplicated = sum(1 for n in ran.values() if n > 1)
    lost = sum(1 for cid in acked if ran[cid] != 1)
    unknown = [f"outcome unknown: {str(e)[:160]}" for w in workers for e in w.errors]
    tool_errors = [f"tool error: {t}" for w in workers for t in (w.tool_errors or {}).values()]
    failures = [f for w in workers for f in w.failures]
    print(
        f"\n{label}: {len(acked)} acknowledged, {duplicated} ran twice, {lost} acknowledged"
        f" but lost; errors: {len(unknown)} outcome-unknown, {len(tool_errors)} tool errors,"
        f" {len(failures)} other"
    )
    for text in sorted({t[:120] for t in unknown + tool_errors + failures})[:8]:
        print(f"  error: {text}")
    return duplicated, lost


@pytest.mark.parametrize("era", ["handshake", "stateless"])
async def test_failover_of_the_busiest_primary_with_wait_loses_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, own_redis_cluster: RedisClusterProcess, era: str
) -> None:
    env = {
        "REDIS_URL": own_redis_cluster.url,
        "STATE_PREFIX": f"test-{uuid.uuid4().hex}",
        "MCP_LEDGER_LEASE": LEASE,
        "MCP_TRANSACTIONAL": "0",  # plain tools: see kit_cluster_on_redis_cluster
    }
    with contextlib.contextmanager(running_cluster)(
        request, tmp_path, env, timeout=START
    ) as servers:
        workers, ran = await failover_under_load(own_redis_cluster, servers, era)
        duplicated, lost = _report(f"WAIT on, {era}", workers, ran)
        assert duplicated == 0
        assert lost == 0
        for w in workers:
            assert w.acked, f"{w.name} made no progress"
            for exc in w.errors:  # in doubt only as the ledger confirms it
                assert "confirmed by its ledger" in exc.stage, exc


async def test_failover_without_wait_loses_acknowledged_increments(
    request: pytest.FixtureRequest, tmp_path: Path, own_redis_cluster: RedisClusterProcess
) -> None:
    """The same staging with ``wait_replicas=0``: what the guarantee prevents."""
    env = {
        "REDIS_URL": f"{own_redis_cluster.url}?wait_replicas=0",
        "STATE_PREFIX": f"test-{uuid.uuid4().hex}",
        "MCP_LEDGER_LEASE": LEASE,
        "MCP_TRANSACTIONAL": "0",  # plain tools: see kit_cluster_on_redis_cluster
    }
    with contextlib.contextmanager(running_cluster)(
        request, tmp_path, env, timeout=START
    ) as servers:
        workers, ran = await failover_under_load(own_redis_cluster, servers, "stateless")
        _duplicated, lost = _report("WAIT off, stateless", workers, ran)
        assert lost > 0
