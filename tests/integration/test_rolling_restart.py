"""A rolling restart of every backend under steady load loses and duplicates no increment.

Several clients, each with its own session, increment their counters in a loop with a
unique call id per call, while the three backends are restarted one after another. At
the end the servers' own execution records and counters are checked against what each
client was told.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest
from mcp_types import CallToolResult

from mcp_resilient import HANDSHAKE_VERSIONS, ResilientClient, RetryPolicy
from tests.rig import ServerCluster
from tests.rig.ops import LoadWorker, assert_acked_ran_once, progress_after, restart_each

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]

pytestmark = pytest.mark.anyio

WORKERS = 4
BOUND = 240.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Worker(LoadWorker):
    last_value: int = 0
    final_counter: int | None = None
    sessions: int = 0
    resumes: int = 0

    def note(self, result: CallToolResult) -> None:
        assert result.structured_content is not None
        self.last_value = int(result.structured_content["result"])


async def run_worker(worker: Worker, urls: list[str], stop: anyio.Event) -> None:
    policy = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
    async with ResilientClient(
        urls, protocol_version=HANDSHAKE, retry=policy, timeout=60
    ) as client:
        await worker.run(client, stop, worker.note)
        counter = await client.call_tool("get_counter")
        assert counter.structured_content is not None
        worker.final_counter = int(counter.structured_content["result"])
        worker.sessions = client.stats.sessions
        worker.resumes = client.stats.resumes


@pytest.mark.parametrize("setup", ["direct", "haproxy"])
async def test_rolling_restart_loses_and_duplicates_nothing(
    mcp_cluster: ServerCluster, setup: str, request: pytest.FixtureRequest
) -> None:
    """Client-side failover over the three URLs, and one URL through HAProxy."""
    urls = mcp_cluster.urls if setup == "direct" else [request.getfixturevalue("haproxy").url]
    workers = [Worker(f"w{i}") for i in range(WORKERS)]
    stop = anyio.Event()

    async def progress(at_least: int) -> None:
        await progress_after(lambda: sum(len(w.acked) for w in workers), at_least, "acked")

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(run_worker, worker, urls, stop)
            await progress(3 * WORKERS)
            await restart_each(mcp_cluster, lambda: progress(2 * WORKERS))
            stop.set()

    summary = [(w.name, len(w.acked), len(w.unknown), w.sessions, w.resumes) for w in workers]
    print(f"{setup}: (worker, acked, unknown, sessions, resumes) {summary}")
    # The restarts really hit the sessions: some were replaced and their state resumed.
    assert sum(w.sessions for w in workers) > WORKERS, workers
    assert sum(w.resumes for w in workers) >= 1, workers
    checker = mcp_cluster[0]
    for worker in workers:
        counts = await assert_acked_ran_once(checker, worker)
        executed_unknown = sum(counts[cid] for cid in worker.unknown)
        assert worker.final_counter is not None
        # Every acknowledged increment is in the (resumed) counter; nothing beyond what ran.
        assert len(worker.acked) <= worker.final_counter <= len(worker.acked) + executed_unknown, (
            worker
        )
