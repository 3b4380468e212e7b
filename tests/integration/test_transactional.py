"""Transactional tools on real replicas: a SIGKILL at any point of a run ends in one
applied effect and a normal answer.

The example's ``increment`` is ``@transactional``: with a ``call_id`` it writes the
execution record and the counter, staged, and commits both with the ledger's outcome.
The run waits at a gate at the chosen point (``hold``/``hold_at`` before the commit,
``gate`` after it), records where it waits, and the test SIGKILLs that process there:
no fixed sleeps. Both stores, both eras.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Generator
from typing import Any

import anyio
import pytest

from mcp_resilient import HANDSHAKE_VERSIONS, ResilientClient, RetryPolicy
from tests.integration.conftest import running_cluster
from tests.rig import ServerCluster
from tests.rig.ops import (
    LoadWorker,
    assert_acked_ran_once,
    executions,
    open_gate,
    progress_after,
    restart_each,
    wait_until,
    waiting_on,
)

pytestmark = pytest.mark.anyio

ERAS = {"handshake": HANDSHAKE_VERSIONS[0], "stateless": "2026-07-28"}
POINTS = ["start", "between", "end", "committed"]
"""Before the first staged write, between writes, after the last one before the commit,
after the commit before the answer."""
BOUND = 90.0
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
REPLAYED = "io.github.mcp-resilient/replayed"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def tx_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[ServerCluster, None, None]:
    """Three replicas of the example server (transactional tools), one store, a 1 s lease."""
    tmp = tmp_path_factory.mktemp(f"tx-{request.param}")
    env = {"MCP_LEDGER_LEASE": "1"}
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        env |= {"REDIS_URL": redis.url, "STATE_PREFIX": f"tx-{uuid.uuid4().hex}"}
    else:
        env["STATE_DB"] = str(tmp / "state.sqlite3")
    yield from running_cluster(request, tmp, env, timeout=BOUND)


@pytest.mark.parametrize("era", ["handshake", "stateless"])
@pytest.mark.parametrize("point", POINTS)
async def test_sigkill_at_any_point_applies_once_and_answers(
    tx_cluster: ServerCluster, point: str, era: str
) -> None:
    for server in tx_cluster:  # the previous test's victim comes back first
        if not server.running:
            await anyio.to_thread.run_sync(lambda s=server: s.start_healthy(BOUND))
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    args: dict[str, Any] = {"by": 1, "call_id": call_id}
    if point == "committed":
        args["gate"] = gate
    else:
        args |= {"hold": gate, "hold_at": point}
    outcome: dict[str, Any] = {}
    async with ResilientClient(
        tx_cluster.urls, retry=FAST, protocol_version=ERAS[era], timeout=BOUND
    ) as client:
        before = await client.call_tool("get_counter")
        assert before.structured_content == {"result": 0}

        async def call() -> None:
            outcome["result"] = await client.call_tool("increment", args)

        async def held() -> bool:
            return await waiting_on(tx_cluster[0], gate) is not None

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await wait_until(held, f"the run holds at {point}", BOUND)
                holder_name = await waiting_on(tx_cluster[0], gate)
                holder = next(s for s in tx_cluster if s.instance == holder_name)
                witness = next(s for s in tx_cluster if s is not holder)
                applied_before = await executions(witness, call_id)
                holder.kill()
                await open_gate(witness, gate)
        result = outcome["result"]
        counter = await client.call_tool("get_counter")
    # A normal answer, never "outcome unknown"; the effect applied exactly once.
    assert result.is_error is False, result
    assert result.structured_content == {"result": 1}, result
    assert await executions(witness, call_id) == 1
    if point == "committed":
        assert applied_before == 1
        assert (result.meta or {}).get(REPLAYED) is True  # answered from the ledger
    else:
        assert applied_before == 0  # staged: nothing was written before the commit
    # The state that follows the client (its session, or its state id) holds one increment.
    assert counter.structured_content == {"result": 1}, counter


async def test_eight_clients_on_one_counter_under_kills(tx_cluster: ServerCluster) -> None:
    """Eight clients share one state id (2026-07-28) and increment its counter while
    replicas are SIGKILLed and restarted: the counter ends at exactly the number of
    acknowledged increments (optimistic concurrency never loses an update)."""
    for server in tx_cluster:
        if not server.running:
            await anyio.to_thread.run_sync(lambda s=server: s.start_healthy(BOUND))
    state_id = f"shared-{uuid.uuid4().hex}"
    workers = [LoadWorker(f"c{i}") for i in range(8)]
    stop = anyio.Event()
    chaos = random.Random()

    async def work(worker: LoadWorker) -> None:
        async with ResilientClient(
            tx_cluster.urls, retry=FAST, timeout=BOUND, state_id=state_id
        ) as client:
            await worker.run(client, stop)

    async def more() -> None:
        await progress_after(lambda: sum(w.calls for w in workers), 16, "increments", BOUND)

    with anyio.fail_after(4 * BOUND):
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(work, worker)
            await more()
            victims = [chaos.choice(tx_cluster.servers) for _ in range(2)]
            await restart_each(victims, more, graceful=False, timeout=BOUND)
            stop.set()
    async with ResilientClient(tx_cluster.urls, timeout=BOUND, state_id=state_id) as client:
        counter = await client.call_tool("get_counter")
    acked = sum(len(w.acked) for w in workers)
    print(f"\n8 clients, one counter: {acked} acknowledged, counter {counter.structured_content}")
    for worker in workers:
        assert not worker.errors, worker.errors
        await assert_acked_ran_once(tx_cluster[0], worker)
    assert counter.structured_content == {"result": acked}
