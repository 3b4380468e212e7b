"""Issue 19, client side, on real FastMCP servers: what the client says happened is true.

In the 2026-07-28 era no session pins the client to a replica: a call that moves after a
kill must show in ``endpoint``, ``last_endpoint``, the result's ``endpoint``, the
``failover`` event and ``stats.failovers``. A read-only tool's timeout is a plain timeout
without a prior ``list_tools``, and ``ToolResult.data`` unwraps what FastMCP wrapped, in
both eras.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import anyio
import pytest

from mcp_resilient import (
    Event,
    OutcomeUnknownError,
    RequestTimeoutError,
    ResilientClient,
    RetryPolicy,
    ToolError,
)
from tests.integration.conftest import running_cluster
from tests.rig import ServerCluster, ServerProcess

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
ERAS = ["2025-11-25", MODERN]
BOUND = 60.0  # a bug fails the test instead of hanging it
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.2)
MAX_CALLS = 40  # each call has even odds of landing on the dead replica first


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Generator[ServerCluster, None, None]:
    """Two example-server replicas sharing state through one SQLite file."""
    env = {"STATE_DB": str(tmp_path / "state.sqlite3")}
    yield from running_cluster(request, tmp_path, env, size=2, prefix="vis")


def _server_at(cluster: ServerCluster, url: str | None) -> ServerProcess:
    return next(server for server in cluster if server.url == url)


async def test_a_call_that_moves_replicas_is_visible_in_the_new_era(pair: ServerCluster) -> None:
    events: list[Event] = []
    with anyio.fail_after(BOUND):
        async with ResilientClient(pair.urls, retry=FAST, on_event=events.append) as client:
            assert client.protocol_version == MODERN
            victim = _server_at(pair, client.endpoint)
            survivor = next(server for server in pair if server is not victim)
            await anyio.to_thread.run_sync(victim.kill)
            for _ in range(MAX_CALLS):
                result = await client.call_tool("whoami")
                if client.stats.failovers:
                    break
            # Checked first: what the old code got wrong (no failover seen; the dead endpoint).
            assert client.stats.failovers >= 1, [str(e) for e in events]
            assert client.endpoint == survivor.url, client.endpoint
            last = client.last_endpoint
    failovers = [e for e in events if e.kind == "failover"]
    assert failovers, [str(e) for e in events]
    assert failovers[0].detail["from_endpoint"] == victim.url
    assert failovers[0].endpoint == survivor.url
    # The call that moved was answered by the survivor, and every view says so.
    assert result.structured_content is not None
    assert result.structured_content["pid"] == survivor.pid
    assert result.endpoint == survivor.url
    assert last == survivor.url


@pytest.mark.parametrize("version", ERAS)
async def test_a_read_only_timeout_is_plain_without_list_tools(
    mcp_server: ServerProcess, version: str
) -> None:
    with anyio.fail_after(BOUND):
        async with ResilientClient(mcp_server.url, protocol_version=version) as client:
            assert client.cached_tool("sleep") is None  # never listed
            with pytest.raises(RequestTimeoutError) as info:
                await client.call_tool("sleep", {"seconds": 30}, timeout=2.0)
    assert not isinstance(info.value, OutcomeUnknownError), info.value
    assert "could run it twice" not in str(info.value)


@pytest.mark.parametrize("version", ERAS)
async def test_data_unwraps_and_raise_on_error(mcp_server: ServerProcess, version: str) -> None:
    with anyio.fail_after(BOUND):
        async with ResilientClient(mcp_server.url, protocol_version=version) as client:
            added = await client.call_tool("add", {"a": 1, "b": 2})
            slept = await client.call_tool("sleep", {"seconds": 0.01})
            failed = await client.call_tool("fail", {"message": "nope"})
            with pytest.raises(ToolError, match="nope") as info:
                await client.call_tool("fail", {"message": "nope"}, raise_on_error=True)
            last = client.last_endpoint
    assert added.data == {"a": 1.0, "b": 2.0, "sum": 3.0}  # an object: as sent
    assert slept.data == 0.01  # a float, sent wrapped as {"result": 0.01}
    assert slept.structured_content == {"result": 0.01}
    assert failed.is_error is True and failed.data is None
    assert info.value.tool == "fail"
    assert added.endpoint == last == mcp_server.url
