"""Both protocol eras against real servers, each in its own process.

Four servers (``tests/servers/eras_server.py``): FastMCP 4 as it comes (both eras on one
endpoint), FastMCP serving only 2026-07-28, FastMCP serving only the handshake era, and
the official ``mcp`` 2.x server. ``protocol_version="auto"`` must pick the right era with
each, and every public method of the client must work in every era a server speaks.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import anyio
import mcp_types
import pytest

from mcp_resilient import MCPError, ResilientClient, ServerError
from tests.rig import ServerProcess

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
BOUND = 60.0

#: Server kind -> the eras it speaks, newest first (what ``auto`` must pick is the first).
KINDS: dict[str, tuple[str, ...]] = {
    "fastmcp": (MODERN, HANDSHAKE),
    "fastmcp-stateless": (MODERN,),
    "fastmcp-handshake": (HANDSHAKE,),
    "mcp": (MODERN, HANDSHAKE),
}
SERVER_NAMES = {"mcp": "eras-mcp"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=list(KINDS))
def eras_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[tuple[str, ServerProcess], None, None]:
    """One server of each kind per module (they start in about a second each)."""
    kind: str = request.param
    logs: Path = tmp_path_factory.mktemp("eras-logs")
    server = ServerProcess(
        instance=kind,
        module="tests.servers.eras_server",
        extra_args=["--kind", kind],
        log_path=logs / f"{kind}.log",
    )
    server.start_healthy()
    try:
        yield kind, server
    finally:
        server.terminate()


async def test_auto_picks_the_newest_era_and_pinning_a_missing_one_fails(
    eras_server: tuple[str, ServerProcess],
) -> None:
    kind, server = eras_server
    expected = KINDS[kind][0]
    with anyio.fail_after(BOUND):
        async with ResilientClient(server.url) as client:
            await client.list_tools()
            assert client.protocol_version == expected
            if expected == MODERN:
                assert client.session_id is None
            else:
                assert isinstance(client.session_id, str) and client.session_id
            assert client.endpoint == server.url
            assert client.server_info is not None
            assert client.server_info.name == SERVER_NAMES.get(kind, "eras-fastmcp")
    # Pinning an era the server does not speak fails clearly, naming the version.
    for version in [v for v in (MODERN, HANDSHAKE) if v not in KINDS[kind]]:
        with anyio.fail_after(BOUND), pytest.raises(MCPError) as info:
            async with ResilientClient(server.url, protocol_version=version, timeout=10.0) as c:
                await c.list_tools()
        # The error names what the server does speak, so the caller knows what to pin.
        spoken = KINDS[kind][0]
        assert spoken in str(info.value), repr(info.value)


async def test_every_public_method_in_every_era_the_server_speaks(
    eras_server: tuple[str, ServerProcess],
) -> None:
    kind, server = eras_server
    for version in KINDS[kind]:
        with anyio.fail_after(BOUND):
            await _exercise(server, version)


async def _exercise(server: ServerProcess, version: str) -> None:
    logs: list[mcp_types.LoggingMessageNotificationParams] = []
    progress: list[tuple[float, float | None]] = []

    async def on_log(params: mcp_types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async with ResilientClient(server.url, protocol_version=version, log_handler=on_log) as client:
        assert client.protocol_version == version, version
        assert (client.session_id is None) is (version == MODERN)

        tools = {tool.name: tool for tool in await client.list_tools()}
        assert {"add", "progress", "log"} <= tools.keys()
        added = await client.call_tool("add", {"a": 1, "b": 2})
        assert added.is_error is False
        assert added.content == [mcp_types.TextContent(text="3")]

        resources = await client.list_resources()
        assert "text://hello" in [str(r.uri) for r in resources]
        templates = await client.list_resource_templates()
        assert "greeting://{name}" in [t.uri_template for t in templates]
        read = await client.read_resource("text://hello")
        assert _texts(read) == ["hello"]
        templated = await client.read_resource("greeting://bob")
        assert _texts(templated) == ["hello bob"]

        prompts = await client.list_prompts()
        assert "greet" in [p.name for p in prompts]
        prompt = await client.get_prompt("greet", {"name": "Ada"})
        (message,) = prompt.messages
        assert isinstance(message.content, mcp_types.TextContent)
        assert message.content.text == "Greet Ada."

        await client.ping()  # server/discover in the stateless era, which has no ping

        capabilities = client.server_capabilities
        if version != MODERN and capabilities is not None and capabilities.logging is None:
            # The official server's handshake era has no logging/setLevel (nor advertises
            # it): the client must say so, not pretend.
            with pytest.raises(ServerError) as refused:
                await client.set_logging_level("warning")
            assert refused.value.code == -32601
        else:
            await client.set_logging_level("warning")
            await client.call_tool("log", {"level": "info", "message": "filtered out"})
            await client.call_tool("log", {"level": "error", "message": "let through"})
            assert [_log_text(entry.data) for entry in logs] == ["let through"], (version, logs)

        done = await client.call_tool("progress", {"steps": 3}, progress_handler=on_progress)
        assert done.is_error is False
        assert progress == [(1, 3), (2, 3), (3, 3)], (version, progress)
        assert client.protocol_version == version  # nothing re-negotiated on the way


def _log_text(data: object) -> object:
    """FastMCP wraps a log message as ``{"msg": ..., "extra": ...}``; the SDK sends it as is."""
    return data.get("msg") if isinstance(data, dict) else data


def _texts(result: mcp_types.ReadResourceResult) -> list[str]:
    return [c.text for c in result.contents if isinstance(c, mcp_types.TextResourceContents)]
