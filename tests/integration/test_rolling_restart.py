"""A rolling restart of every backend under steady load loses and duplicates no increment.

Several clients, each with its own session, increment their counters in a loop with a
unique call id per call, while the three backends are restarted one after another. At
the end the servers' own execution records and counters are checked against what each
client was told.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
import httpx
import pytest

from mcp_resilient import HANDSHAKE_VERSIONS, OutcomeUnknownError, ResilientClient, RetryPolicy
from tests.rig import ServerCluster, ServerProcess

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]

pytestmark = pytest.mark.anyio

WORKERS = 4
MAX_CALLS_PER_WORKER = 5000  # a bound, not a target: workers run until the restarts are done
PACE = 0.02  # seconds between a worker's calls: a steady load, not a flood
BOUND = 240.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Worker:
    name: str
    acked: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    last_value: int = 0
    final_counter: int | None = None
    sessions: int = 0
    resumes: int = 0


async def run_worker(worker: Worker, urls: list[str], stop: anyio.Event) -> None:
    policy = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
    async with ResilientClient(
        urls, protocol_version=HANDSHAKE, retry=policy, timeout=60
    ) as client:
        for _ in range(MAX_CALLS_PER_WORKER):
            if stop.is_set():
                break
            call_id = uuid.uuid4().hex
            try:
                result = await client.call_tool("increment", {"by": 1, "call_id": call_id})
            except OutcomeUnknownError:
                worker.unknown.append(call_id)
                continue
            assert result.is_error is False, result
            assert result.structured_content is not None
            worker.acked.append(call_id)
            worker.last_value = int(result.structured_content["result"])
            await anyio.sleep(PACE)
        counter = await client.call_tool("get_counter")
        assert counter.structured_content is not None
        worker.final_counter = int(counter.structured_content["result"])
        worker.sessions = client.stats.sessions
        worker.resumes = client.stats.resumes


async def total_acked(workers: list[Worker]) -> int:
    return sum(len(w.acked) for w in workers)


async def progress_after(workers: list[Worker], at_least: int) -> None:
    start = await total_acked(workers)
    with anyio.fail_after(60):
        while await total_acked(workers) < start + at_least:
            await anyio.sleep(0.05)


async def executions(server: ServerProcess, call_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}

    async def fetch(http: httpx.AsyncClient, chunk: list[str]) -> None:
        for call_id in chunk:
            response = await http.get(f"{server.base_url}/executions/{call_id}")
            response.raise_for_status()
            counts[call_id] = int(response.json()["count"])

    async with httpx.AsyncClient(timeout=10) as http, anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(fetch, http, call_ids[i::8])
    return counts


@pytest.mark.parametrize("setup", ["direct", "haproxy"])
async def test_rolling_restart_loses_and_duplicates_nothing(
    mcp_cluster: ServerCluster, setup: str, request: pytest.FixtureRequest
) -> None:
    """Client-side failover over the three URLs, and one URL through HAProxy."""
    urls = mcp_cluster.urls if setup == "direct" else [request.getfixturevalue("haproxy").url]
    workers = [Worker(f"w{i}") for i in range(WORKERS)]
    stop = anyio.Event()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(run_worker, worker, urls, stop)
            await progress_after(workers, 3 * WORKERS)
            for server in mcp_cluster:
                await anyio.to_thread.run_sync(lambda s=server: s.restart(graceful=True))
                await progress_after(workers, 2 * WORKERS)
            stop.set()

    summary = [(w.name, len(w.acked), len(w.unknown), w.sessions, w.resumes) for w in workers]
    print(f"{setup}: (worker, acked, unknown, sessions, resumes) {summary}")
    # The restarts really hit the sessions: some were replaced and their state resumed.
    assert sum(w.sessions for w in workers) > WORKERS, workers
    assert sum(w.resumes for w in workers) >= 1, workers
    checker = mcp_cluster[0]
    for worker in workers:
        assert worker.acked, f"{worker.name} made no progress"
        counts = await executions(checker, worker.acked + worker.unknown)
        duplicated = {cid: n for cid, n in counts.items() if n > 1}
        assert not duplicated, f"{worker.name}: calls executed more than once: {duplicated}"
        lost = [cid for cid in worker.acked if counts[cid] != 1]
        assert not lost, f"{worker.name}: acknowledged calls with no execution record: {lost}"
        executed_unknown = sum(counts[cid] for cid in worker.unknown)
        assert worker.final_counter is not None
        # Every acknowledged increment is in the (resumed) counter; nothing beyond what ran.
        assert len(worker.acked) <= worker.final_counter <= len(worker.acked) + executed_unknown, (
            worker
        )
