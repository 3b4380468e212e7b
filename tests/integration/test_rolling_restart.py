"""A rolling restart (SIGTERM on each backend in turn) under steady load (issue 17).

Several clients, each with its own session (handshake era) or none (``auto``, which picks
2026-07-28 with these servers), increment their counters in a loop with a unique call id
per call, and read (a read-only tool) between increments, while the three backends are
restarted one after another with SIGTERM: directly (client-side failover over three
URLs) and through HAProxy with health checks. At the end the servers' own execution
records (and, in the handshake era, the resumed counters) are checked against what each
client was told.

- With the kit (graceful drain and the idempotency ledger): no error of any type, not
  even an outcome-unknown, because no call is cut.
- Without it (a plain server, cut at shutdown): reads never fail, and the only errors are
  ``OutcomeUnknownError`` on the non-idempotent increments.
Both: nothing ran twice and every acknowledged increment ran exactly once.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp_types import CallToolResult

from examples._haproxy import HAProxyProcess
from mcp_resilient import HANDSHAKE_VERSIONS, ResilientClient, RetryPolicy
from tests.integration.conftest import running_cluster, running_haproxy
from tests.rig import ServerCluster
from tests.rig.ops import LoadWorker, assert_acked_ran_once, progress_after, restart_each

ERAS = {"handshake": HANDSHAKE_VERSIONS[0], "auto": "auto"}
KITS = {
    "kit": {},
    # A plain server: no drain, no ledger (keys are not honoured).
    "plain": {"MCP_DRAIN": "0", "MCP_IDEMPOTENCY": "0"},
}

pytestmark = pytest.mark.anyio

WORKERS = 4
READ_EVERY = 2
BOUND = 600.0
RESTART_BOUND = 120.0  # a loaded 2-core machine can take a minute to boot a replica
CALL_TIMEOUT = 120.0  # a call may sit in a restarting replica's listen backlog that long


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_env: dict[str, str], kit: str
) -> Generator[ServerCluster, None, None]:
    yield from running_cluster(request, tmp_path, {**redis_env, **KITS[kit]})


@dataclass
class Worker(LoadWorker):
    last_value: int = 0
    final_counter: int | None = None
    sessions: int = 0
    resumes: int = 0

    def note(self, result: CallToolResult) -> None:
        assert result.structured_content is not None
        self.last_value = int(result.structured_content["result"])


async def run_worker(worker: Worker, urls: list[str], era: str, stop: anyio.Event) -> None:
    policy = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
    async with ResilientClient(
        urls, protocol_version=ERAS[era], retry=policy, timeout=60
    ) as client:
        await worker.run(client, stop, worker.note)
        if era == "handshake":  # a counter per session: only the handshake era has sessions
            counter = await client.call_tool("get_counter")
            assert counter.structured_content is not None
            worker.final_counter = int(counter.structured_content["result"])
        worker.sessions = client.stats.sessions
        worker.resumes = client.stats.resumes


@pytest.mark.parametrize("era", sorted(ERAS))
@pytest.mark.parametrize("setup", ["direct", "haproxy"])
async def test_rolling_restart_loses_and_duplicates_nothing(
    cluster: ServerCluster, setup: str, era: str, kit: str, tmp_path: Path
) -> None:
    proxy: Generator[HAProxyProcess, None, None] | None = None
    urls = cluster.urls
    if setup == "haproxy":
        proxy = running_haproxy(cluster, tmp_path, round_robin=era != "handshake")
        urls = [next(proxy).url]
    workers = [Worker(f"w{i}", read_every=READ_EVERY) for i in range(WORKERS)]
    stop = anyio.Event()

    async def progress(at_least: int) -> None:
        await progress_after(
            lambda: sum(len(w.acked) for w in workers), at_least, "acked", RESTART_BOUND
        )

    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for worker in workers:
                    tg.start_soon(run_worker, worker, urls, era, stop)
                await progress(3 * WORKERS)
                await restart_each(cluster, lambda: progress(2 * WORKERS), timeout=RESTART_BOUND)
                stop.set()
    finally:
        if proxy is not None:
            proxy.close()

    acked = sum(len(w.acked) for w in workers)
    unknown = sum(len(w.unknown) for w in workers)
    reads = sum(w.reads for w in workers)
    sessions = sum(w.sessions for w in workers)
    resumes = sum(w.resumes for w in workers)
    print(
        f"\n{kit}/{setup}/{era}: {acked} increments acked, {unknown} outcome-unknown,"
        f" {reads} reads (0 failed), {sessions} sessions, {resumes} resumes"
    )
    if kit == "kit":
        # Drained, not cut: no call was left in doubt.
        assert unknown == 0, [str(e) for w in workers for e in w.errors]
    if era == "handshake":
        # The restarts really hit the sessions: some were replaced and their state resumed.
        assert sessions > WORKERS, workers
        assert resumes >= 1, workers
    checker = cluster[0]
    for worker in workers:
        counts = await assert_acked_ran_once(checker, worker)
        if worker.final_counter is not None:
            executed_unknown = sum(counts[cid] for cid in worker.unknown)
            # Every acknowledged increment is in the (resumed) counter; nothing beyond.
            assert (
                len(worker.acked) <= worker.final_counter <= len(worker.acked) + executed_unknown
            ), worker
