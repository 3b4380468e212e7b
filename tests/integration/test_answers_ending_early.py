"""Real-server answers that end without their response are in doubt, in both eras (issue 17).

A real FastMCP server (under whatever sse-starlette is installed: the newest in
``scripts/test.sh --latest``) runs each call and then ends its answer early, in each
framing (``tests/servers/ended_server.py``). A read-only call is re-sent and answered; a
non-idempotent one is reported as ``OutcomeUnknownError`` (never ``ProtocolError``) and
was not run twice. The SIGTERM case (sse-starlette ending open answers at shutdown) is in
``test_rolling_restart.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator
from pathlib import Path

import anyio
import pytest

from mcp_resilient import (
    HANDSHAKE_VERSIONS,
    OutcomeUnknownError,
    ResilientClient,
    RetryPolicy,
    StreamEndedError,
)
from tests.rig import ServerProcess
from tests.servers.ended_server import FRAMINGS

pytestmark = pytest.mark.anyio

ERAS = {"handshake": HANDSHAKE_VERSIONS[0], "stateless": "2026-07-28"}
FAST = RetryPolicy(initial_backoff=0.02, max_backoff=0.2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def ended_server(tmp_path_factory: pytest.TempPathFactory) -> Generator[ServerProcess, None, None]:
    logs: Path = tmp_path_factory.mktemp("ended-logs")
    server = ServerProcess(
        instance="ended", module="tests.servers.ended_server", log_path=logs / "ended.log"
    )
    server.start_healthy(120)
    try:
        yield server
    finally:
        server.terminate()


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("era", sorted(ERAS))
async def test_answer_that_ends_early_is_in_doubt(
    ended_server: ServerProcess, era: str, framing: str
) -> None:
    read_id, write_id = uuid.uuid4().hex, uuid.uuid4().hex
    async with ResilientClient(
        ended_server.url, protocol_version=ERAS[era], retry=FAST, timeout=120, listen=False
    ) as client:
        with anyio.fail_after(240):
            read = await client.call_tool(
                "add", {"a": 2, "b": 3, "call_id": read_id, "end_as": framing}
            )
            assert read.structured_content == {"result": 5}
            with pytest.raises(OutcomeUnknownError) as info:
                await client.call_tool("bump", {"call_id": write_id, "end_as": framing})
            assert isinstance(info.value.__cause__, StreamEndedError), info.value.__cause__
            ran = await client.call_tool("runs_of", {"call_id": write_id})
            read_ran = await client.call_tool("runs_of", {"call_id": read_id})
    assert ran.structured_content == {"result": 1}  # ran once, never re-sent
    assert read_ran.structured_content == {"result": 2}  # the read was re-sent
