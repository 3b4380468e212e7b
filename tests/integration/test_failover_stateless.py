"""Failover in the stateless era (2026-07-28) on the real cluster: 3 servers sharing Redis.

No session pins a stateless client to a backend, so every request may land anywhere:
given the three URLs, the client picks one per request; through HAProxy (plain round
robin, ``examples/haproxy/haproxy-roundrobin.cfg``) the balancer does. A SIGKILL mid-call
breaks that call's response stream, and the spec says a lost request is re-issued with a
new request id: the client does so only when it is safe, otherwise it says the outcome is
unknown. The servers' own execution record (per ``call_id``) shows what really ran.

The cluster runs with the example server's idempotency ledger on (``ledger``: a re-sent
call with the same key runs once) and off (``plain``: the client must not re-send a
non-idempotent call at all).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from examples._haproxy import ROUND_ROBIN_CONFIG, HAProxyProcess, haproxy_path
from mcp_resilient import OutcomeUnknownError, ResilientClient, RetryPolicy
from tests.integration.conftest import running_cluster
from tests.rig import ServerCluster, ServerProcess
from tests.rig.ops import (
    LoadWorker,
    SafeGatedCall,
    assert_acked_ran_once,
    executions,
    open_gate,
    progress_after,
    restart_each,
    wait_until,
)

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
# Generous bounds: they exist so a bug fails the test instead of hanging it.
BOUND = 60.0
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["ledger", "plain"])
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_env: dict[str, str]
) -> Generator[ServerCluster, None, None]:
    """Three example servers sharing Redis, with the idempotency ledger on or off."""
    env = {**redis_env, "MCP_IDEMPOTENCY": "1" if request.param == "ledger" else "0"}
    yield from running_cluster(request, tmp_path, env)


def _has_ledger(cluster: ServerCluster) -> bool:
    return cluster[0].env.get("MCP_IDEMPOTENCY") == "1"


@pytest.fixture
def round_robin(cluster: ServerCluster, tmp_path: Path) -> Generator[HAProxyProcess, None, None]:
    """HAProxy with plain round robin (no stick table) in front of ``cluster``."""
    if haproxy_path() is None:
        pytest.fail("haproxy is not installed (apt-get install -y haproxy)", pytrace=False)
    proxy = HAProxyProcess(
        cluster.urls, log_path=tmp_path / "logs" / "haproxy.log", config=ROUND_ROBIN_CONFIG
    )
    proxy.start(expect_instances=len(cluster))
    try:
        yield proxy
    finally:
        proxy.stop()


@dataclass
class Wire:
    """What the client put on the wire: every POST's URL and JSON body (an httpx hook)."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def hook(self, request: httpx.Request) -> None:
        if request.method == "POST" and request.content:
            body = json.loads(request.content)
            if isinstance(body, dict):
                self.sent.append((str(request.url), body))

    def calls(self, **arguments: Any) -> list[tuple[str, dict[str, Any]]]:
        """The ``tools/call`` requests whose arguments include ``arguments``."""
        found = []
        for url, body in self.sent:
            args = (body.get("params") or {}).get("arguments") or {}
            if body.get("method") == "tools/call" and arguments.items() <= args.items():
                found.append((url, body))
        return found

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=None, write=30.0, pool=30.0),
            event_hooks={"request": [self.hook]},
        )


@dataclass
class Setup:
    """One way to reach the cluster, and how to tell which backend runs a given call."""

    urls: list[str]
    wire: Wire
    predict: ServerProcess | None = None
    """Through HAProxy: the backend round robin sends the next request to."""

    def executing(self, cluster: ServerCluster, **arguments: Any) -> ServerProcess:
        if self.predict is not None:
            return self.predict
        (url, _body), *_ = self.wire.calls(**arguments)
        return next(server for server in cluster if server.url == url)


async def _setup(
    kind: str, cluster: ServerCluster, request: pytest.FixtureRequest, wire: Wire
) -> Setup:
    if kind == "direct":
        return Setup(cluster.urls, wire)
    proxy: HAProxyProcess = request.getfixturevalue("round_robin")
    return Setup([proxy.url], wire)


async def _predict_next_backend(client: ResilientClient, cluster: ServerCluster) -> ServerProcess:
    """With plain round robin and no other traffic, backends take turns in config order.

    Checked, not assumed: two ``whoami`` calls must land on consecutive backends.
    """
    pids = []
    for _ in range(2):
        who = await client.call_tool("whoami", timeout=BOUND)
        assert who.structured_content is not None
        pids.append(who.structured_content["pid"])
    order = [server.pid for server in cluster]
    first, second = (order.index(pid) for pid in pids)
    assert second == (first + 1) % len(order), f"not round robin: {pids} over {order}"
    return cluster[(second + 1) % len(order)]


def _survivor(cluster: ServerCluster, victim: ServerProcess) -> ServerProcess:
    return next(server for server in cluster if server is not victim and server.running)


@pytest.mark.parametrize("kind", ["direct", "haproxy"])
async def test_kill_mid_call_non_idempotent_never_runs_twice(
    cluster: ServerCluster, kind: str, request: pytest.FixtureRequest
) -> None:
    wire = Wire()
    setup = await _setup(kind, cluster, request, wire)
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    outcome: dict[str, Any] = {}
    async with (
        wire.client() as http,
        ResilientClient(setup.urls, http_client=http, retry=FAST) as client,
    ):
        await client.list_tools()
        assert client.protocol_version == MODERN and client.session_id is None
        if kind == "haproxy":
            setup.predict = await _predict_next_backend(client, cluster)

        async def call() -> None:
            try:
                outcome["value"] = await client.call_tool(
                    "increment", {"by": 1, "call_id": call_id, "gate": gate}, timeout=BOUND
                )
            except OutcomeUnknownError as exc:
                outcome["value"] = exc

        async def committed() -> bool:
            return await executions(cluster[0], call_id) >= 1

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                # The work is committed and the answer waits at the gate: kill its backend.
                await wait_until(committed, "increment committed")
                victim = setup.executing(cluster, call_id=call_id)
                victim.kill()
                witness = _survivor(cluster, victim)
                await open_gate(witness, gate)
        runs = await executions(witness, call_id)
        value = outcome["value"]
        assert runs == 1, f"a non-idempotent call ran {runs} times"
        if isinstance(value, OutcomeUnknownError):
            assert value.method == "tools/call" and value.tool == "increment"
        else:
            # Completed: only a server that dedupes by idempotency key makes that safe.
            assert _has_ledger(cluster), f"re-sent without a ledger: {value}"
            assert value.is_error is False, value
            assert client.stats.retries >= 1  # it was the killed call that was re-sent
        # The client moves on: the next call works on a surviving backend.
        after = await client.call_tool("add", {"a": 1, "b": 2}, timeout=BOUND)
        assert after.is_error is False
    if kind == "direct":
        ids = [body["id"] for _url, body in wire.calls(call_id=call_id)]
        assert len(ids) == len(set(ids)), f"a request id was reused: {ids}"


@pytest.mark.parametrize("cluster", ["plain"], indirect=True)
@pytest.mark.parametrize("kind", ["direct", "haproxy"])
@pytest.mark.parametrize("tool", ["slow_progress", "increment"])
async def test_kill_mid_call_safe_calls_complete_elsewhere(
    cluster: ServerCluster, kind: str, tool: str, request: pytest.FixtureRequest
) -> None:
    """A read-only tool (by annotation) and a call marked idempotent are re-issued.

    On the plain cluster: with the ledger, any keyed call may be re-sent.
    """
    wire = Wire()
    setup = await _setup(kind, cluster, request, wire)
    gate, call_id = uuid.uuid4().hex, uuid.uuid4().hex
    async with (
        wire.client() as http,
        ResilientClient(setup.urls, http_client=http, retry=FAST) as client,
    ):
        await client.list_tools()  # slow_progress is annotated read-only
        assert client.protocol_version == MODERN
        if kind == "haproxy":
            setup.predict = await _predict_next_backend(client, cluster)

        call = SafeGatedCall(client, tool, gate, call_id, BOUND)

        async def committed() -> bool:
            return await executions(cluster[0], call_id) >= 1

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call.run)
                if tool == "slow_progress":
                    await call.progress_seen.wait()
                else:
                    await wait_until(committed, "increment committed")
                victim = setup.executing(cluster, gate=gate)
                victim.kill()
                witness = _survivor(cluster, victim)
                await wait_until(lambda: _retried(client), "the call was re-issued")
                await open_gate(witness, gate)
        assert call.result.is_error is False, call.result
        assert client.stats.retries >= 1
    sent = wire.calls(gate=gate)
    if kind == "direct":
        assert len(sent) >= 2
        assert sent[0][0] == victim.url and sent[-1][0] != victim.url
    ids = [body["id"] for _url, body in sent]
    assert len(ids) == len(set(ids)), f"re-issued with a reused request id: {ids}"


async def _retried(client: ResilientClient) -> bool:
    return client.stats.retries >= 1


# -- rolling restart under load ---------------------------------------------------------

WORKERS = 4
ROLLING_BOUND = 240.0


@dataclass
class Worker(LoadWorker):
    eras: set[str | None] = field(default_factory=set)


async def _work(worker: Worker, urls: list[str], stop: anyio.Event) -> None:
    async with ResilientClient(urls, retry=FAST, timeout=60) as client:
        await worker.run(client, stop, lambda _result: worker.eras.add(client.protocol_version))


@pytest.mark.parametrize(
    ("cluster", "kind"),
    [("plain", "direct"), ("plain", "haproxy"), ("ledger", "direct")],
    indirect=["cluster"],
)
async def test_rolling_restart_loses_and_duplicates_nothing(
    cluster: ServerCluster, kind: str, request: pytest.FixtureRequest
) -> None:
    setup = await _setup(kind, cluster, request, Wire())
    workers = [Worker(f"w{i}") for i in range(WORKERS)]
    stop = anyio.Event()

    async def progress(at_least: int) -> None:
        await progress_after(
            lambda: sum(len(w.acked) for w in workers), at_least, "acknowledged calls"
        )

    with anyio.fail_after(ROLLING_BOUND):
        async with anyio.create_task_group() as tg:
            for worker in workers:
                tg.start_soon(_work, worker, setup.urls, stop)
            await progress(3 * WORKERS)
            await restart_each(cluster, lambda: progress(2 * WORKERS))
            stop.set()
    summary = [(w.name, len(w.acked), len(w.unknown)) for w in workers]
    print(f"{kind}: (worker, acked, unknown) {summary}")
    checker = cluster[0]
    for worker in workers:
        assert worker.eras == {MODERN}, worker.eras
        await assert_acked_ran_once(checker, worker)
