"""One URL, three backends behind real HAProxy (sticky sessions, redispatch, health checks).

The client only knows the load balancer's URL; when the backend holding its session dies,
HAProxy sends the next request elsewhere, that backend answers 404 for the unknown session,
and the client starts a new session and carries the state over with resume_session.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest

from examples._haproxy import HAProxyProcess
from mcp_resilient import HANDSHAKE_VERSIONS, Event, OutcomeUnknownError, ResilientClient
from tests.rig import ServerCluster, ServerProcess
from tests.rig.ops import increment_killed_mid_call, open_gate

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]

pytestmark = pytest.mark.anyio

BOUND = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def backend_of(client: ResilientClient, cluster: ServerCluster) -> ServerProcess:
    who = await client.call_tool("whoami")
    assert who.structured_content is not None
    pid = who.structured_content["pid"]
    return next(server for server in cluster if server.pid == pid)


async def test_edge_validation_of_accept(haproxy: HAProxyProcess) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        no_sse_get = await http.get(haproxy.url, headers={"Accept": "application/json"})
        json_only_post = await http.post(
            haproxy.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json"},
        )
        good = await http.post(
            haproxy.url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert no_sse_get.status_code == 406
    assert json_only_post.status_code == 406
    assert good.status_code == 200
    assert good.headers.get("mcp-session-id")


async def test_sessions_stick_to_their_backend(
    haproxy: HAProxyProcess, mcp_cluster: ServerCluster
) -> None:
    async with ResilientClient(haproxy.url, protocol_version=HANDSHAKE) as client:
        first = await backend_of(client, mcp_cluster)
        for _ in range(5):
            assert await backend_of(client, mcp_cluster) is first


async def test_backend_kill_resumes_state_through_haproxy(
    haproxy: HAProxyProcess, mcp_cluster: ServerCluster
) -> None:
    events: list[Event] = []
    async with ResilientClient(
        haproxy.url, protocol_version=HANDSHAKE, on_event=events.append
    ) as client:
        for i in range(3):
            await client.call_tool("increment", {"by": 1})
            await client.call_tool("add_note", {"text": f"n{i}"})
        old_session = client.session_id
        victim = await backend_of(client, mcp_cluster)
        victim.kill()
        with anyio.fail_after(BOUND):
            counter = await client.call_tool("get_counter")
        assert counter.structured_content == {"result": 3}
        notes = await client.call_tool("list_notes")
        assert notes.structured_content == {"result": ["n0", "n1", "n2"]}
        assert client.session_id != old_session
        assert client.endpoint == haproxy.url
        assert (await backend_of(client, mcp_cluster)) is not victim
        nxt = await client.call_tool("increment", {"by": 1})
        assert nxt.structured_content == {"result": 4}
    kinds = [e.kind for e in events]
    assert "session_lost" in kinds
    assert "session_resumed" in kinds


async def test_kill_mid_call_through_haproxy(
    haproxy: HAProxyProcess, mcp_cluster: ServerCluster
) -> None:
    async with ResilientClient(haproxy.url, protocol_version=HANDSHAKE) as client:
        await client.list_tools()
        victim = await backend_of(client, mcp_cluster)
        other = next(s for s in mcp_cluster if s is not victim)
        error, runs = await increment_killed_mid_call(client, victim, other, BOUND)
        assert runs == 1, "a non-idempotent call ran twice"
        assert isinstance(error, OutcomeUnknownError), error

        # A read-only call caught by a kill is re-sent and completes on another backend.
        gate2 = uuid.uuid4().hex
        victim2 = await backend_of(client, mcp_cluster)
        survivor = next(s for s in mcp_cluster if s is not victim2 and s.running)
        seen = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.set()

        result: dict[str, Any] = {}

        async def read_call() -> None:
            result["value"] = await client.call_tool(
                "slow_progress",
                {"steps": 2, "gate": gate2, "gate_at": 1},
                progress_handler=on_progress,
                timeout=BOUND,
            )

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_call)
                await seen.wait()
                victim2.kill()
                while client.stats.retries < 1:
                    await anyio.sleep(0.05)
                await open_gate(survivor, gate2)
        assert result["value"].structured_content == {"steps": 2, "completed": True}
