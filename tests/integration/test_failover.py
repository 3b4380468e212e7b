"""Failover and session recovery against three real servers sharing state through Redis.

The client gets the three URLs directly (client-side failover, no load balancer). Each
test kills or restarts real processes and checks what the caller sees and what the
servers actually executed (the example server counts executions per call id).
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import anyio.to_thread
import pytest

from mcp_resilient import (
    HANDSHAKE_VERSIONS,
    Event,
    OutcomeUnknownError,
    RequestTimeoutError,
    ResilientClient,
    RetryPolicy,
)
from tests.rig import ServerCluster, ServerProcess
from tests.rig.ops import (
    SafeGatedCall,
    executions,
    increment_killed_mid_call,
    open_gate,
    wait_until,
)

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]

pytestmark = pytest.mark.anyio

# Generous bounds: they exist so a bug fails the test instead of hanging it.
BOUND = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def victim_of(cluster: ServerCluster, client: ResilientClient) -> ServerProcess:
    return next(server for server in cluster if server.url == client.endpoint)


def survivor(cluster: ServerCluster, *not_these: ServerProcess) -> ServerProcess:
    return next(server for server in cluster if server not in not_these and server.running)


async def test_kill_mid_call_non_idempotent_never_runs_twice(mcp_cluster: ServerCluster) -> None:
    events: list[Event] = []
    async with ResilientClient(
        mcp_cluster.urls, protocol_version=HANDSHAKE, on_event=events.append
    ) as client:
        await client.list_tools()
        victim = victim_of(mcp_cluster, client)
        other = survivor(mcp_cluster, victim)
        error, runs = await increment_killed_mid_call(client, victim, other, BOUND)
        assert runs == 1, "a non-idempotent call ran twice"
        assert isinstance(error, OutcomeUnknownError), f"expected OutcomeUnknownError, got {error}"
        assert error.endpoint == victim.url
        assert error.method == "tools/call" and error.tool == "increment"
        assert error.request_id is not None
        assert "outcome_unknown" in [e.kind for e in events]
        # The client moves on: the next call works on a surviving backend.
        after = await client.call_tool("get_counter", timeout=BOUND)
        assert after.is_error is False
        assert client.endpoint != victim.url


async def _executed(server: ServerProcess, call_id: str) -> bool:
    return await executions(server, call_id) >= 1


@pytest.mark.parametrize("tool", ["slow_progress", "increment"])
async def test_kill_mid_call_safe_calls_complete_elsewhere(
    mcp_cluster: ServerCluster, tool: str
) -> None:
    """A read-only tool (by annotation) and a call the caller marks idempotent are re-sent."""
    gate = uuid.uuid4().hex
    call_id = uuid.uuid4().hex
    async with ResilientClient(mcp_cluster.urls, protocol_version=HANDSHAKE) as client:
        await client.list_tools()  # slow_progress is annotated read-only
        victim = victim_of(mcp_cluster, client)
        other = survivor(mcp_cluster, victim)
        call = SafeGatedCall(client, tool, gate, call_id, BOUND)
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call.run)
                if tool == "slow_progress":
                    await call.progress_seen.wait()
                else:
                    await wait_until(lambda: _executed(other, call_id), "increment committed")
                victim.kill()
                await wait_until(lambda: _moved(client, victim), "client moved to another backend")
                await open_gate(other, gate)
        assert call.result.is_error is False
        assert client.endpoint != victim.url
        assert client.stats.retries >= 1


async def _moved(client: ResilientClient, victim: ServerProcess) -> bool:
    return client.endpoint is not None and client.endpoint != victim.url


async def test_session_on_killed_backend_resumes_counter_and_notes(
    mcp_cluster: ServerCluster,
) -> None:
    events: list[Event] = []
    async with ResilientClient(
        mcp_cluster.urls, protocol_version=HANDSHAKE, on_event=events.append
    ) as client:
        for i in range(3):
            await client.call_tool("increment", {"by": 1})
            await client.call_tool("add_note", {"text": f"note {i}"})
        old_session, victim = client.session_id, victim_of(mcp_cluster, client)
        victim.kill()
        with anyio.fail_after(BOUND):
            counter = await client.call_tool("get_counter")
        assert counter.structured_content == {"result": 3}
        notes = await client.call_tool("list_notes")
        assert notes.structured_content == {"result": ["note 0", "note 1", "note 2"]}
        assert client.session_id != old_session
        assert client.endpoint != victim.url
        # The counter continues from where it was.
        nxt = await client.call_tool("increment", {"by": 1})
        assert nxt.structured_content == {"result": 4}
    kinds = [e.kind for e in events]
    # One refused connect moves the session at once (other endpoints exist); the endpoint
    # is only marked down after `failure_threshold` failures, so no endpoint_down here.
    for kind in ("session_lost", "failover", "session_resumed"):
        assert kind in kinds, kinds
    resumed = next(e for e in events if e.kind == "session_resumed")
    assert resumed.detail["old_session_id"] == old_session
    assert client.stats.resumes == 1 and client.stats.failovers == 1


async def test_resume_can_be_turned_off(mcp_cluster: ServerCluster) -> None:
    async with ResilientClient(
        mcp_cluster.urls, protocol_version=HANDSHAKE, resume_tool=None
    ) as client:
        await client.call_tool("increment", {"by": 5})
        victim_of(mcp_cluster, client).kill()
        with anyio.fail_after(BOUND):
            counter = await client.call_tool("get_counter")
    assert counter.structured_content == {"result": 0}
    assert client.stats.resumes == 0


async def test_all_down_then_one_back(mcp_cluster: ServerCluster) -> None:
    policy = RetryPolicy(initial_backoff=0.05, max_backoff=0.5)
    async with ResilientClient(
        mcp_cluster.urls, protocol_version=HANDSHAKE, retry=policy
    ) as client:
        await client.call_tool("increment", {"by": 2})
        for server in mcp_cluster:
            server.kill()
        result: dict[str, Any] = {}

        async def call() -> None:
            result["value"] = await client.call_tool("get_counter", timeout=BOUND)

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await wait_until(_retried(client, 3), "client retrying with backoff")
                assert "value" not in result
                await anyio.to_thread.run_sync(mcp_cluster[1].restart)
        assert result["value"].structured_content == {"result": 2}  # resumed from Redis state
        assert client.endpoint == mcp_cluster[1].url


def _retried(client: ResilientClient, times: int) -> Any:
    async def check() -> bool:
        return client.stats.retries >= times

    return check


async def test_all_down_with_short_deadline_fails_clearly(mcp_cluster: ServerCluster) -> None:
    async with ResilientClient(mcp_cluster.urls, protocol_version=HANDSHAKE) as client:
        for server in mcp_cluster:
            server.kill()
        with anyio.fail_after(BOUND), pytest.raises(RequestTimeoutError) as info:
            await client.call_tool("get_counter", timeout=1.0)
    text = str(info.value)
    assert "deadline" in text or "within 1 s" in text
    assert "timeout=" in text  # says what the caller can do


async def test_open_fails_clearly_when_nothing_is_up() -> None:
    from mcp_resilient import ConnectError

    urls = ["http://127.0.0.1:9/mcp", "http://127.0.0.1:11/mcp"]
    with (
        anyio.fail_after(BOUND),
        pytest.raises(RequestTimeoutError, match="could not open a session"),
    ):
        async with ResilientClient(urls, protocol_version=HANDSHAKE, timeout=1.0):
            pass
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01)
    with anyio.fail_after(BOUND), pytest.raises(ConnectError, match="after 3 attempts over 2"):
        async with ResilientClient(urls, protocol_version=HANDSHAKE, timeout=BOUND, retry=policy):
            pass
