"""Acceptance tests of SSE resumption against real servers, through a fault-injecting proxy.

The example server answers ``slow_progress`` over SSE with event ids (it has an event
store) and a short ``retry:`` hint. ``tests/rig/faultproxy.py`` sits between the client
and the server (or HAProxy) and cuts the server-to-client direction of SSE answers at
random byte offsets, with a FIN or a TCP reset; the client must reconnect with GET +
``Last-Event-ID`` and deliver every progress notification exactly once, in order, and
the result.

**Why the proxy holds the cut of each POST answer until the server has finished it.**
FastMCP 4.1 / mcp 2.3 lose events on a resumed stream while the tool is still producing
them: ``StreamableHTTPServerTransport._replay_events`` takes the replay from the event
store, sends it, and only then stores the new stream's priming event and registers the
live tail. An event stored in between is neither replayed nor sent live, and since it
precedes the priming event's id in the store, no later ``Last-Event-ID`` replays it: it
is lost for good (with live cuts, about half of the calls lost one progress step, and
some lost their response and hung until the deadline). That is a server bug the client
cannot repair, so these tests make sure no event is produced while a client resumes:
each POST answer is cut at a random offset (the client sees the events up to there,
live), but only once the server has sent all of it. Every resumption is then a replay,
and the resumed GETs are cut again at random offsets, so each call is resumed several
times. Set ``FAULT_SEED`` to draw the same offsets again (the interleaving of concurrent
calls still varies).
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Generator
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from examples._haproxy import HAProxyProcess, haproxy_path
from mcp_resilient import (
    HANDSHAKE_VERSIONS,
    ClientStats,
    Event,
    MCPError,
    OutcomeUnknownError,
    ProgressHandler,
    ResilientClient,
    StreamEndedError,
)
from tests.rig import LOOPBACK, ServerCluster, ServerProcess
from tests.rig.faultproxy import (
    Cut,
    Exchange,
    FaultProxy,
    FaultProxyProcess,
    Policy,
    Reply,
    RequestHead,
    random_cuts,
)

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]

pytestmark = pytest.mark.anyio

STEPS = 50
STEP_DELAY = 0.01
"""Seconds between progress steps: the answer streams live up to the cut point."""
RETRY_MS = 50
"""The servers' SSE ``retry:`` hint (the client waits this long before reconnecting)."""
CALLS = 200
CLIENTS = 4
CALLS_PER_CLIENT = 2
"""Calls in flight per client: 8 at once in all."""
CUT_MIN, CUT_MAX = 100, 3000
"""Cut offsets in body bytes. The answer to ``slow_progress(50)`` is over 10 KB, so its
POST answer is always cut, and the replay that follows (over 7 KB) is cut again: at least
two resumptions per call. 100 bytes always include the priming event (about 70 bytes)."""
MIN_RESUMES_PER_CALL = 2
CALL_TIMEOUT = 60.0
STRESS_BOUND = 400.0
BOUND = 60.0
STREAM_RECONNECT_CAP = 5
"""``Session.max_stream_reconnects``: reconnects in a row without a new event (see docs)."""

EXPECTED_PROGRESS = [float(step) for step in range(1, STEPS + 1)]
EXPECTED_RESULT = {"steps": STEPS, "completed": True}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fault_seed() -> int:
    seed = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault proxy seed: {seed} (FAULT_SEED={seed} draws the same cut offsets)")
    return seed


def _print_log_tails(servers: list[ServerProcess]) -> None:
    """Printed at teardown: pytest shows it only for a failed test."""
    for server in servers:
        print(
            f"\n----- {server.instance} ({server.log_path}) -----\n{server.log_tail(40)}",
            file=sys.stderr,
        )


@pytest.fixture
def resumable_server(tmp_path: Path) -> Generator[ServerProcess, None, None]:
    """One example server with an in-memory event store and a short retry hint."""
    server = ServerProcess(
        instance="resumable",
        env={
            "MCP_RETRY_MS": str(RETRY_MS),
            "MCP_EVENT_STORE": "memory",
            "STATE_DB": str(tmp_path / "state.sqlite3"),
            # These tests are about SSE resumption alone: without the idempotency ledger a
            # call whose stream cannot be resumed ends there, instead of being re-sent.
            "MCP_IDEMPOTENCY": "0",
        },
        log_path=tmp_path / "logs" / "resumable.log",
    )
    server.start_healthy()
    try:
        yield server
    finally:
        _print_log_tails([server])
        server.terminate()


@pytest.fixture
def resumable_cluster(
    tmp_path: Path, redis_env: dict[str, str]
) -> Generator[ServerCluster, None, None]:
    """Three instances with Redis state and the Redis-backed event store, short retry hint."""
    env = {**redis_env, "MCP_RETRY_MS": str(RETRY_MS), "MCP_EVENT_STORE": "redis"}
    cluster = ServerCluster(3, env=env, prefix="node", log_dir=tmp_path / "logs")
    cluster.start()
    try:
        yield cluster
    finally:
        _print_log_tails(list(cluster))
        cluster.stop()


@pytest.fixture
def haproxy(
    resumable_cluster: ServerCluster, tmp_path: Path
) -> Generator[HAProxyProcess, None, None]:
    if haproxy_path() is None:
        reason = "haproxy is not installed (apt-get install -y haproxy)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    proxy = HAProxyProcess(resumable_cluster.urls, log_path=tmp_path / "logs" / "haproxy.log")
    proxy.start(expect_instances=len(resumable_cluster))
    try:
        yield proxy
    finally:
        proxy.stop()


# -- the rig: the proxy cuts where it is told ------------------------------------------


async def read_until_cut(
    http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Headers, bytes, Exception | None]:
    """The response headers, the body bytes that arrived, and the error that ended it."""
    received = b""
    async with http.stream(method, url, **kwargs) as response:
        try:
            async for chunk in response.aiter_bytes():
                received += chunk
        except httpx.TransportError as exc:
            return response.headers, received, exc
    return response.headers, received, None


@pytest.mark.parametrize("mode", ["fin", "rst"])
async def test_proxy_cuts_at_the_chosen_byte(resumable_server: ServerProcess, mode: str) -> None:
    """The client gets the headers and exactly ``at_byte`` body bytes, then the cut."""
    cut = Cut(at_byte=7, mode="fin" if mode == "fin" else "rst")
    async with (
        FaultProxy(resumable_server.host, resumable_server.port, policy=lambda _: cut) as proxy,
        httpx.AsyncClient(timeout=10) as http,
    ):
        with anyio.fail_after(BOUND):
            _, received, error = await read_until_cut(http, "GET", f"{proxy.base_url}/health")
    assert error is not None
    assert received == b'{"statu'
    assert proxy.stats.cuts == 1 and proxy.stats.cuts_by_mode == {mode: 1}


async def test_proxy_cuts_after_the_chosen_event(resumable_server: ServerProcess) -> None:
    """``after_events=1`` on the SSE answer to ``initialize``: only the priming event."""

    def first_event_only(exchange: Exchange) -> Cut | None:
        return Cut(after_events=1) if exchange.method == "POST" and exchange.is_sse else None

    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "rig", "version": "0"},
        },
    }
    async with (
        FaultProxy(resumable_server.host, resumable_server.port, policy=first_event_only) as proxy,
        httpx.AsyncClient(timeout=10) as http,
    ):
        with anyio.fail_after(BOUND):
            headers, received, error = await read_until_cut(
                http,
                "POST",
                proxy.url,
                json=initialize,
                headers={"Accept": "application/json, text/event-stream"},
            )
    assert error is not None
    assert headers["content-type"].startswith("text/event-stream")
    lines = received.decode().splitlines()
    fields = [line.partition(":")[0] for line in lines if line]
    assert sorted(fields) == ["data", "id", "retry"], lines  # the priming event, nothing else
    assert received.endswith(b"\r\n\r\n"), received
    assert proxy.records[0].events == 1


# -- the 200-call stress run -----------------------------------------------------------


@dataclass
class CallRecord:
    """What one call saw."""

    index: int
    progress: list[float] = field(default_factory=list)
    resumes: int = 0
    result: Any = None
    error: str | None = None

    def problem(self) -> str | None:
        if self.error is not None:
            return self.error
        if self.progress != EXPECTED_PROGRESS:
            missing = sorted(set(EXPECTED_PROGRESS) - set(self.progress))
            return f"progress {self.progress} (missing {missing})"
        if self.result != EXPECTED_RESULT:
            return f"result {self.result!r}"
        return None


_current_call: ContextVar[CallRecord | None] = ContextVar("current_call", default=None)


@dataclass
class StressRun:
    records: list[CallRecord]
    stats: list[ClientStats] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    """Client events other than resumptions and session open/close (retries, failovers)."""

    def on_event(self, event: Event) -> None:
        if event.kind == "stream_resumed":
            # Emitted in the calling task, so the context says which call resumed.
            record = _current_call.get()
            if record is not None:
                record.resumes += 1
        elif event.kind not in ("session_started", "closed"):
            record = _current_call.get()
            call = record.index if record is not None else None
            self.events.append(f"call {call}: {event}")


def _recorder(progress: list[float]) -> ProgressHandler:
    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    return on_progress


async def run_stress(url: str, calls: int) -> StressRun:
    """``calls`` calls of ``slow_progress(50)`` over CLIENTS clients, 8 in flight."""
    run = StressRun([CallRecord(index) for index in range(calls)])
    jobs = iter(run.records)

    async def worker(client: ResilientClient) -> None:
        for record in jobs:
            _current_call.set(record)
            try:
                result = await client.call_tool(
                    "slow_progress",
                    {"steps": STEPS, "delay": STEP_DELAY},
                    progress_handler=_recorder(record.progress),
                    timeout=CALL_TIMEOUT,
                )
                record.result = result.structured_content
            except MCPError as exc:
                record.error = f"{type(exc).__name__}: {exc}"

    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                ResilientClient(url, protocol_version=HANDSHAKE, on_event=run.on_event)
            )
            for _ in range(CLIENTS)
        ]
        async with anyio.create_task_group() as group:
            for client in clients:
                for _ in range(CALLS_PER_CLIENT):
                    group.start_soon(worker, client)
        run.stats = [client.stats for client in clients]
    return run


def stress_policy(seed: int) -> Policy:
    """Random cuts of SSE answers (POSTs held until complete, resumed GETs as they come).

    Only answers within a session are cut: the answer to ``initialize`` (no session id
    yet) is left alone here; its resumption has a test of its own below.
    """
    cuts = random_cuts(
        random.Random(seed), CUT_MIN, CUT_MAX, methods=("POST", "GET"), hold_methods=("POST",)
    )

    def policy(exchange: Exchange) -> Cut | None:
        if exchange.request is None or "mcp-session-id" not in exchange.request.headers:
            return None
        return cuts(exchange)

    return policy


def check_stress(run: StressRun, proxy: FaultProxy, seed: int) -> None:
    records = run.records
    cut_stats = proxy.stats.as_dict()
    resumes = [record.resumes for record in records]
    print(
        f"seed {seed}: {len(records)} calls, proxy {cut_stats},"
        f" resumes per call min {min(resumes)} mean {sum(resumes) / len(resumes):.1f}"
        f" max {max(resumes)}"
    )
    where = f"(FAULT_SEED={seed})"
    bad = [(record.index, problem) for record in records if (problem := record.problem())]
    assert not bad, f"{len(bad)} of {len(records)} calls went wrong {where}: {bad[:5]}"
    assert proxy.errors == [], proxy.errors
    assert proxy.stats.cuts >= 2 * len(records), f"too few cuts {where}: {cut_stats}"
    assert proxy.stats.cuts_by_mode.get("fin", 0) > 0, cut_stats
    assert proxy.stats.cuts_by_mode.get("rst", 0) > 0, cut_stats
    assert min(resumes) >= MIN_RESUMES_PER_CALL, f"a call was resumed too rarely {where}"
    # Resumed, never re-sent: no retry, no lost session, nothing in doubt.
    assert run.events == [], f"{where}: {run.events[:10]}"
    for client_stats in run.stats:
        assert client_stats.retries == 0, client_stats
        assert client_stats.outcome_unknown == 0, client_stats
        assert client_stats.sessions == 1 and client_stats.sessions_lost == 0, client_stats


async def test_random_cuts_every_notification_once_in_order(
    resumable_server: ServerProcess, fault_seed: int
) -> None:
    policy = stress_policy(fault_seed)
    async with FaultProxy(resumable_server.host, resumable_server.port, policy=policy) as proxy:
        with anyio.fail_after(STRESS_BOUND):
            run = await run_stress(proxy.url, CALLS)
        check_stress(run, proxy, fault_seed)


async def test_random_cuts_through_haproxy_with_redis_event_store(
    haproxy: HAProxyProcess, resumable_cluster: ServerCluster, fault_seed: int
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for node in resumable_cluster:
            health = (await http.get(node.health_url)).json()
            assert health["event_store"] == "redis", health
    policy = stress_policy(fault_seed)
    async with FaultProxy(LOOPBACK, haproxy.port, policy=policy) as proxy:
        with anyio.fail_after(STRESS_BOUND):
            run = await run_stress(proxy.url, CALLS)
        check_stress(run, proxy, fault_seed)


# -- the handshake's own answer -----------------------------------------------------------


async def test_interrupted_initialize_answer_is_resumed_on_its_session(
    resumable_server: ServerProcess,
) -> None:
    resumes: list[RequestHead] = []
    cut_done = False

    def policy(exchange: Exchange) -> Cut | None:
        nonlocal cut_done
        if exchange.method == "GET" and exchange.last_event_id is not None:
            assert exchange.request is not None
            resumes.append(exchange.request)
        if not cut_done and exchange.method == "POST" and exchange.is_sse:
            cut_done = True  # the answer to initialize: cut after its priming event
            return Cut(after_events=1, hold=True)
        return None

    events: list[Event] = []
    async with (
        FaultProxy(resumable_server.host, resumable_server.port, policy=policy) as proxy,
        ResilientClient(
            proxy.url, protocol_version=HANDSHAKE, listen=False, on_event=events.append
        ) as client,
    ):
        session_id = client.session_id
        stats = client.stats
    assert proxy.stats.cuts == 1
    assert len(resumes) >= 1, "the client did not try to resume the handshake"
    assert resumes[0].headers.get("mcp-session-id") == session_id, resumes[0].headers
    assert stats.retries == 0 and stats.sessions == 1, (stats, [str(e) for e in events])


# -- a server that closes gracefully and never sends anything new ----------------------


class GracefulCloser:
    """Proxy hooks: cut the next SSE answer to a POST after ``after_events`` events, and
    answer every resuming GET with an SSE stream that ends at once, carrying nothing new
    (only a replay of the id the client sent, which it must drop)."""

    def __init__(self, after_events: int, *, hold: bool) -> None:
        self.after_events = after_events
        self.hold = hold
        self.armed = False
        self.resumes: list[RequestHead] = []

    def policy(self, exchange: Exchange) -> Cut | None:
        if self.armed and exchange.method == "POST" and exchange.is_sse:
            self.armed = False
            return Cut(after_events=self.after_events, mode="fin", hold=self.hold)
        return None

    def intercept(self, request: RequestHead) -> Reply | None:
        last_event_id = request.headers.get("last-event-id")
        if request.method != "GET" or last_event_id is None:
            return None
        self.resumes.append(request)
        body = f"id: {last_event_id}\nretry: 20\ndata: \n\n".encode()
        return Reply(200, {"content-type": "text/event-stream", "cache-control": "no-cache"}, body)


async def open_gate(server: ServerProcess, name: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.post(f"{server.base_url}/gates/{name}")).raise_for_status()


async def executions(server: ServerProcess, call_id: str) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.base_url}/executions/{call_id}")
        response.raise_for_status()
        return int(response.json()["count"])


async def test_graceful_close_without_new_events_gives_up_at_the_cap(
    resumable_server: ServerProcess,
) -> None:
    """Non-idempotent call: after the cap, ``OutcomeUnknownError`` caused by the cap."""
    closer = GracefulCloser(after_events=1, hold=False)  # just the priming event
    events: list[Event] = []
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    async with FaultProxy(
        resumable_server.host,
        resumable_server.port,
        policy=closer.policy,
        intercept=closer.intercept,
    ) as proxy:
        try:
            async with ResilientClient(
                proxy.url, protocol_version=HANDSHAKE, listen=False, on_event=events.append
            ) as client:
                session_id = client.session_id
                closer.armed = True
                with anyio.fail_after(BOUND), pytest.raises(OutcomeUnknownError) as caught:
                    # increment commits, then waits on the gate: nothing new ever comes.
                    await client.call_tool(
                        "increment",
                        {"by": 1, "call_id": call_id, "gate": gate},
                        timeout=BOUND / 2,
                    )
                assert client.stats.outcome_unknown == 1
        finally:
            await open_gate(resumable_server, gate)
    error = caught.value
    assert error.tool == "increment"
    cause = error.__cause__
    assert isinstance(cause, StreamEndedError), repr(cause)
    assert f"gave up after {STREAM_RECONNECT_CAP} reconnects" in str(cause), str(cause)
    assert proxy.stats.cuts == 1, proxy.stats
    # Exactly the cap of reconnecting GETs, each from the same place, with the session.
    assert len(closer.resumes) == STREAM_RECONNECT_CAP, closer.resumes
    assert len({request.headers["last-event-id"] for request in closer.resumes}) == 1
    for request in closer.resumes:
        assert request.headers.get("mcp-session-id") == session_id
        assert request.headers.get("mcp-protocol-version")
    resumed = [event for event in events if event.kind == "stream_resumed"]
    assert len(resumed) == STREAM_RECONNECT_CAP
    # Not sent again: the server ran it once.
    assert await executions(resumable_server, call_id) == 1


async def test_graceful_close_cap_on_a_read_only_call_sends_it_again(
    resumable_server: ServerProcess,
) -> None:
    """Read-only call: after the cap the failover rules re-send it, and it completes."""
    # Cut after the priming event and step 1, once the server has finished the answer.
    closer = GracefulCloser(after_events=2, hold=True)
    events: list[Event] = []
    progress: list[float] = []
    async with (
        FaultProxy(
            resumable_server.host,
            resumable_server.port,
            policy=closer.policy,
            intercept=closer.intercept,
        ) as proxy,
        ResilientClient(
            proxy.url, protocol_version=HANDSHAKE, listen=False, on_event=events.append
        ) as client,
    ):
        closer.armed = True
        with anyio.fail_after(BOUND):
            result = await client.call_tool(
                "slow_progress",
                {"steps": 3},
                progress_handler=_recorder(progress),
                timeout=BOUND / 2,
            )
        assert client.stats.retries == 1, client.stats
    assert result.structured_content == {"steps": 3, "completed": True}
    assert len(closer.resumes) == STREAM_RECONNECT_CAP
    retries = [event for event in events if event.kind == "retry"]
    assert len(retries) == 1
    assert f"gave up after {STREAM_RECONNECT_CAP} reconnects" in retries[0].detail["error"]
    # Step 1 of the first attempt, then the whole re-sent call: a re-send repeats progress.
    assert progress == [1.0, 1.0, 2.0, 3.0]


# -- memory ------------------------------------------------------------------------------

MEMORY_CALLS = 1000
MEMORY_WARMUP = 200
MEMORY_BOUND = 1024 * 1024
"""Bytes of traced growth allowed over the measured calls (generous: about 1 KiB a call)."""


async def test_memory_flat(tmp_path: Path, fault_seed: int) -> None:
    """1,000 streamed calls, each resumed once: traced memory does not grow past noise."""
    import tracemalloc

    from benchmarks import bench_memory

    server = ServerProcess(
        instance="memory",
        env={
            "MCP_RETRY_MS": "5",
            "MCP_EVENT_STORE": "memory",
            "STATE_DB": str(tmp_path / "state.sqlite3"),
        },
        log_path=tmp_path / "logs" / "memory.log",
    )
    await anyio.to_thread.run_sync(server.start_healthy)
    proxy = FaultProxyProcess(
        server.host,
        server.port,
        [
            "--methods=POST",
            "--hold-methods=POST",
            "--after-events=2",
            f"--seed={fault_seed}",
        ],
    )
    try:
        await anyio.to_thread.run_sync(proxy.start)
        tracemalloc.start()
        try:
            with anyio.fail_after(STRESS_BOUND):
                figures = await bench_memory.measure(
                    proxy.url,
                    calls=MEMORY_CALLS,
                    warmup=MEMORY_WARMUP,
                    concurrency=4,
                    steps=3,
                    top=10,
                )
        finally:
            tracemalloc.stop()
    finally:
        await anyio.to_thread.run_sync(proxy.stop)
        await anyio.to_thread.run_sync(server.terminate)
    report = figures.as_dict()
    print(report)
    assert figures.wrong == [], figures.wrong[:5]
    assert figures.calls == MEMORY_CALLS
    assert figures.resumes >= MEMORY_CALLS, "every call should have been resumed once"
    assert figures.traced_growth <= MEMORY_BOUND, report
