"""Graceful drain (issue 17): SIGTERM fails health, refuses new work, finishes in-flight calls.

A real example server (FastMCP on uvicorn, ``mcp_resilient.server.serve``) gets SIGTERM
while a non-idempotent call is held at a gate. At once ``/health`` answers 503 and a new
MCP request is refused with 503 and ``Retry-After`` before it runs; the held call, once
released, completes and its answer (an SSE stream in the handshake era) reaches the
caller with no error; then the process exits.
"""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import anyio
import httpx
import pytest

from mcp_resilient import HANDSHAKE_VERSIONS, ResilientClient, RetryPolicy
from tests.integration.conftest import ServerFactory
from tests.rig.ops import executions, open_gate, wait_until

pytestmark = pytest.mark.anyio

ERAS = {"handshake": HANDSHAKE_VERSIONS[0], "stateless": "2026-07-28"}
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.5)
BOUND = 120.0  # bounds, not targets: a loaded 2-core machine is slow to boot and serve
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/list",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("era", sorted(ERAS))
async def test_sigterm_drains_then_exits(server_factory: ServerFactory, era: str) -> None:
    server = server_factory("drained", env={"MCP_DRAIN_TIMEOUT": str(BOUND)}, timeout=BOUND)
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    outcome: dict[str, Any] = {}
    async with (
        ResilientClient(
            server.url, retry=FAST, protocol_version=ERAS[era], timeout=BOUND
        ) as client,
        httpx.AsyncClient(timeout=10) as http,
    ):

        async def call() -> None:
            outcome["result"] = await client.call_tool(
                "increment", {"by": 1, "call_id": call_id, "gate": gate}
            )

        async def committed() -> bool:
            return await executions(server, call_id) >= 1

        async def health_fails() -> bool:
            return (await http.get(server.health_url)).status_code == 503

        with anyio.fail_after(3 * BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await wait_until(committed, "increment running, held at its gate", BOUND)
                os.kill(server.pid, signal.SIGTERM)
                await wait_until(health_fails, "/health answers 503", BOUND)
                body = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}
                refused = await http.post(server.url, json=body, headers=MCP_HEADERS)
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"].isdigit()
                assert server.running  # still serving the held call
                await open_gate(server, gate)
            await wait_until(lambda: _exited(server), "the drained server exits", BOUND)
    result = outcome["result"]
    assert result.is_error is False, result
    assert result.structured_content is not None


async def _exited(server: Any) -> bool:
    return not server.running
