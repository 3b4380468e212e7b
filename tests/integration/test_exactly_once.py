"""Exactly-once tool calls on the real cluster: Redis, 3 servers on ``add_resilience``.

Workers send a steady load of non-idempotent increments, each with its own ``call_id``
(the example server's execution record counts applied runs), while backends are
SIGKILLed at random, then each SIGKILLed and restarted in turn. Both eras, directly and through
HAProxy. The example's ``increment`` is transactional, so the servers' record must show:
0 errors of any kind (a run killed mid-way leaves no trace and runs again), no call
applied twice, every acknowledged call applied exactly once, and each client's counter
(its session, or its state id) equal to its acknowledged increments.

Also here: an answer lost after the ledger recorded it is replayed (ran once, no error);
a tool that is not transactional, killed mid-run, is a confirmed "outcome unknown"; and a
plain server (no capability) behaves as before: in doubt and unsafe means unknown.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp_types import CallToolResult

from examples._haproxy import ROUND_ROBIN_CONFIG, HAProxyProcess, haproxy_path
from mcp_resilient import HANDSHAKE_VERSIONS, OutcomeUnknownError, ResilientClient, RetryPolicy
from mcp_resilient._classify import IDEMPOTENCY_META_KEY, honours_idempotency_keys
from tests.integration.conftest import PLAIN_TOOLS, running_cluster
from tests.rig import ServerCluster, ServerProcess
from tests.rig.ops import (
    LoadWorker,
    assert_acked_ran_once,
    execution_counts,
    executions,
    open_gate,
    progress_after,
    restart_each,
    wait_until,
    waiting_on,
)

pytestmark = pytest.mark.anyio

ERAS = {"handshake": HANDSHAKE_VERSIONS[0], "stateless": "2026-07-28", "auto": "auto"}
WORKERS = 4
RANDOM_KILLS = 3
LEASE = "2"  # seconds: how long a dead owner's claim outlives it
BOUND = 600.0
RESTART_BOUND = 90.0
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
CONFIRMED = "confirmed by its ledger"
REPLAYED = "io.github.mcp-resilient/replayed"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def kit_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_env: dict[str, str]
) -> Generator[ServerCluster, None, None]:
    """Three example servers on the kit (ledger on), sharing Redis; a short lease."""
    yield from running_cluster(
        request, tmp_path, {**redis_env, "MCP_LEDGER_LEASE": LEASE}, timeout=RESTART_BOUND
    )


@pytest.fixture
def plain_tools_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_env: dict[str, str]
) -> Generator[ServerCluster, None, None]:
    """The kit's servers with the ledger on, but tools that are not transactional."""
    env = {**redis_env, "MCP_LEDGER_LEASE": LEASE, **PLAIN_TOOLS}
    yield from running_cluster(request, tmp_path, env, timeout=RESTART_BOUND)


@pytest.fixture
def plain_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_env: dict[str, str]
) -> Generator[ServerCluster, None, None]:
    """The same servers without the ledger: no capability, keys are ignored."""
    yield from running_cluster(request, tmp_path, {**redis_env, "MCP_IDEMPOTENCY": "0"})


def _proxy(cluster: ServerCluster, tmp_path: Path, era: str) -> HAProxyProcess:
    if haproxy_path() is None:
        pytest.fail("haproxy is not installed (apt-get install -y haproxy)", pytrace=False)
    # The handshake era needs sessions pinned (stick table); the stateless era none.
    config = {"config": ROUND_ROBIN_CONFIG} if era != "handshake" else {}
    proxy = HAProxyProcess(cluster.urls, log_path=tmp_path / "logs" / "haproxy.log", **config)
    proxy.start(expect_instances=len(cluster))
    return proxy


@dataclass
class Worker(LoadWorker):
    replayed: int = 0
    final_counter: int | None = None
    values: list[int] = field(default_factory=list)
    """The counter after each acknowledged increment, in order."""

    def note(self, result: CallToolResult) -> None:
        self.replayed += bool((result.meta or {}).get(REPLAYED))
        assert result.structured_content is not None, result
        self.values.append(int(result.structured_content["result"]))


async def run_worker(worker: Worker, urls: list[str], era: str, stop: anyio.Event) -> None:
    async with ResilientClient(urls, retry=FAST, timeout=120, protocol_version=ERAS[era]) as client:
        assert honours_idempotency_keys(client.server_capabilities), client.server_capabilities
        if era == "auto":
            assert client.protocol_version == "2026-07-28"  # what auto picks with FastMCP 4
        await worker.run(client, stop, worker.note)
        # The counter lives in session_state(ctx): the session's in the handshake era (and
        # the sessions it resumed into), the client's state id's in 2026-07-28.
        counter = await client.call_tool("get_counter")
        assert counter.structured_content is not None
        worker.final_counter = int(counter.structured_content["result"])


@pytest.fixture
def kit_cluster_on_redis_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_cluster_env: dict[str, str]
) -> Generator[ServerCluster, None, None]:
    """The same three servers, their state (and SSE events) in a Redis Cluster (3 primaries,
    a replica each). Plain tools: the example's transactional increment also writes its
    execution record, outside the session's slot, which a cluster commit refuses."""
    env = {**redis_cluster_env, "MCP_LEDGER_LEASE": LEASE, **PLAIN_TOOLS}
    yield from running_cluster(request, tmp_path, env, timeout=RESTART_BOUND)


@pytest.mark.timeout(900)  # restarts on a busy 2-core machine take their time
@pytest.mark.parametrize("era", ["handshake", "auto"])
@pytest.mark.parametrize("setup", ["direct", "haproxy"])
async def test_kills_and_rolling_restart_run_every_increment_exactly_once(
    kit_cluster: ServerCluster, setup: str, era: str, tmp_path: Path
) -> None:
    await _chaos(kit_cluster, setup, era, tmp_path)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("era", ["handshake", "auto"])
async def test_on_a_redis_cluster_kills_and_rolling_restart_run_every_increment_exactly_once(
    kit_cluster_on_redis_cluster: ServerCluster, era: str, tmp_path: Path
) -> None:
    """The same chaos with the state sharded over a Redis Cluster (hash-tagged keys, WAIT)."""
    await _chaos(kit_cluster_on_redis_cluster, "direct", era, tmp_path, transactional=False)


async def _chaos(
    kit_cluster: ServerCluster,
    setup: str,
    era: str,
    tmp_path: Path,
    *,
    transactional: bool = True,
) -> None:
    """SIGKILLs of random replicas, then each SIGKILLed in turn, under a steady keyed load."""
    proxy = _proxy(kit_cluster, tmp_path, era) if setup == "haproxy" else None
    urls = [proxy.url] if proxy is not None else kit_cluster.urls
    workers = [Worker(f"w{i}") for i in range(WORKERS)]
    stop = anyio.Event()
    chaos = random.Random()

    async def progress(at_least: int) -> None:
        await progress_after(lambda: sum(w.calls for w in workers), at_least, "calls", 120)

    async def more() -> None:
        await progress(2 * WORKERS)

    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for worker in workers:
                    tg.start_soon(run_worker, worker, urls, era, stop)
                await progress(3 * WORKERS)
                # SIGKILL, then start again (a generous bound: a loaded 2-core machine
                # can take many seconds to serve a fresh process's first requests).
                victims = [chaos.choice(kit_cluster.servers) for _ in range(RANDOM_KILLS)]
                await restart_each(victims, more, graceful=False, timeout=RESTART_BOUND)
                # Then each replica in turn, SIGKILLed too. (A graceful SIGTERM restart can
                # end open SSE answers empty, the draining issue: tests/integration/
                # test_rolling_restart.py.)
                await restart_each(kit_cluster, more, graceful=False, timeout=RESTART_BOUND)
                stop.set()
    finally:
        if proxy is not None:
            proxy.stop()

    calls = sum(w.calls for w in workers)
    unknown = sum(len(w.unknown) for w in workers)
    replayed = sum(w.replayed for w in workers)
    checker = kit_cluster[0]
    ran = await execution_counts(checker, [c for w in workers for c in w.acked + w.unknown])
    duplicates = sorted(cid for cid, n in ran.items() if n > 1)
    lost = sorted(cid for w in workers for cid in w.acked if ran[cid] != 1)
    intact = sum(w.final_counter == len(w.acked) for w in workers)
    print(
        f"\n{setup}/{era}: {calls} increments, {unknown} errors, {len(duplicates)} duplicates,"
        f" {len(lost)} lost, state intact in {intact}/{len(workers)} clients,"
        f" {replayed} answered from the ledger after a failure"
    )
    if not transactional:
        # Plain tools: in doubt only as the ledger confirms it (started, never finished).
        for worker in workers:
            for exc in worker.errors:
                assert CONFIRMED in exc.stage and "never finished" in str(exc), exc
            ran_once = await assert_acked_ran_once(checker, worker)
            assert worker.final_counter is not None
            top = len(worker.acked) + sum(ran_once[cid] for cid in worker.unknown)
            assert len(worker.acked) <= worker.final_counter <= top, worker
        return
    # A transactional tool: no "outcome unknown", not even a confirmed one.
    assert not [e for w in workers for e in w.errors]
    assert not duplicates, f"calls applied more than once: {duplicates}"
    assert not lost, f"acknowledged calls with no execution record: {lost}"
    for worker in workers:
        assert worker.acked, f"{worker.name} made no progress"
        # State intact: the counter holds exactly the acknowledged increments, and no
        # acknowledged increment ever saw it go backwards.
        assert worker.final_counter == len(worker.acked), worker
        backwards = [
            (a, b) for a, b in zip(worker.values, worker.values[1:], strict=False) if b <= a
        ]
        assert not backwards, f"{worker.name}: counter went backwards: {backwards[:5]}"


@pytest.mark.parametrize("era", ["handshake", "stateless"])
async def test_answer_lost_after_the_ledger_recorded_it_is_replayed(
    kit_cluster: ServerCluster, era: str
) -> None:
    """SIGKILL between "answer recorded" and "answer sent": the re-send gets it, ran once."""
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    outcome: dict[str, Any] = {}
    async with ResilientClient(kit_cluster.urls, retry=FAST, protocol_version=ERAS[era]) as client:

        async def call() -> None:
            outcome["result"] = await client.call_tool(
                "increment", {"by": 1, "call_id": call_id, "reply_gate": gate}, timeout=60
            )

        _holder, witness = await _kill_the_holder(
            kit_cluster, gate, call, "answer recorded and held at the reply gate"
        )
    result = outcome["result"]
    assert result.is_error is False
    assert (result.meta or {}).get(REPLAYED) is True, result
    assert await executions(witness, call_id) == 1


async def _kill_the_holder(
    cluster: ServerCluster, gate: str, call: Callable[[], Awaitable[None]], what: str
) -> tuple[ServerProcess, ServerProcess]:
    """Run ``call``, SIGKILL the instance whose call waits at ``gate``, open it on a survivor.

    Returns that instance and the survivor (the witness to ask what ran).
    """

    async def held() -> bool:
        return await waiting_on(cluster[0], gate) is not None

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await wait_until(held, what)
            instance = await waiting_on(cluster[0], gate)
            holder = next(s for s in cluster if s.instance == instance)
            holder.kill()
            witness = next(s for s in cluster if s is not holder)
            await open_gate(witness, gate)
    return holder, witness


@pytest.mark.parametrize("era", ["handshake", "stateless"])
async def test_without_the_capability_behaviour_is_unchanged(
    plain_cluster: ServerCluster, era: str
) -> None:
    """A plain FastMCP server: the key is sent but means nothing, so nothing is re-sent."""
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST" and b'"tools/call"' in request.content:
            sent.append(json.loads(request.content))

    outcome: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None), event_hooks={"request": [record]}
        ) as http,
        ResilientClient(
            plain_cluster.urls, http_client=http, retry=FAST, protocol_version=ERAS[era]
        ) as client,
    ):
        assert not honours_idempotency_keys(client.server_capabilities)

        async def call() -> None:
            try:
                outcome["value"] = await client.call_tool(
                    "increment", {"by": 1, "call_id": call_id, "gate": gate}, timeout=60
                )
            except OutcomeUnknownError as exc:
                outcome["value"] = exc

        _holder, witness = await _kill_the_holder(
            plain_cluster, gate, call, "increment committed and held at its gate"
        )
        retries = client.stats.retries
    error = outcome["value"]
    assert isinstance(error, OutcomeUnknownError), error
    assert CONFIRMED not in error.stage and "answer was lost" in str(error)
    assert await executions(witness, call_id) == 1
    # Sent once, with a key, and never re-sent.
    increments = [m for m in sent if m["params"]["arguments"].get("call_id") == call_id]
    assert len(increments) == 1 and retries == 0
    assert IDEMPOTENCY_META_KEY in increments[0]["params"]["_meta"]


@pytest.mark.parametrize("era", ["handshake", "stateless"])
@pytest.mark.parametrize("idempotent", [None, True])
async def test_run_killed_mid_tool_is_confirmed_unknown_unless_safe(
    plain_tools_cluster: ServerCluster, era: str, idempotent: bool | None
) -> None:
    """SIGKILL while a tool that is not transactional runs (before any answer is recorded).

    The client re-sends with the same key; the ledger says "started, never finished" once
    the dead owner's lease runs out. A non-idempotent call ends as a confirmed
    ``OutcomeUnknownError`` and ran once; a call the caller marked idempotent is sent
    again under a fresh key and completes (running twice is what the caller allowed).
    """
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST" and b'"tools/call"' in request.content:
            body = json.loads(request.content)
            if body["params"]["arguments"].get("call_id") == call_id:
                sent.append(body)

    outcome: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None), event_hooks={"request": [record]}
        ) as http,
        ResilientClient(
            plain_tools_cluster.urls, http_client=http, retry=FAST, protocol_version=ERAS[era]
        ) as client,
    ):

        async def call() -> None:
            try:
                outcome["value"] = await client.call_tool(
                    "increment",
                    {"by": 1, "call_id": call_id, "gate": gate},
                    timeout=60,
                    idempotent=idempotent,
                )
            except OutcomeUnknownError as exc:
                outcome["value"] = exc

        holder, witness = await _kill_the_holder(
            plain_tools_cluster, gate, call, "increment committed and held at its gate"
        )
    value = outcome["value"]
    keys = [body["params"]["_meta"][IDEMPOTENCY_META_KEY] for body in sent]
    runs = await executions(witness, call_id)
    if idempotent is None:
        assert isinstance(value, OutcomeUnknownError), value
        assert CONFIRMED in value.stage and "never finished" in str(value)
        assert value.endpoint == holder.url  # where it was sent and lost
        assert runs == 1
        assert len(keys) >= 2 and len(set(keys)) == 1  # re-sent with the same key
    else:
        assert value.is_error is False, value
        assert runs == 2  # the caller said a second run is harmless
        assert len(set(keys)) == 2  # the second run under a fresh key
