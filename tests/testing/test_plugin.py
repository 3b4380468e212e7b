"""The pytest plugin: fixtures, teardown, pass-through of real traffic, cheap import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcp_resilient.testing import MockMCPServer, MockNetwork

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream"}


@pytest.fixture
async def loopback_server() -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 that answers every request with ``real``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nreal")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_real_loopback_traffic_passes_through(
    mcp_mock: MockMCPServer, loopback_server: str
) -> None:
    async with httpx.AsyncClient() as client:
        real = await client.get(loopback_server)
        fake = await client.post(mcp_mock.url, json=INIT, headers=ACCEPT)
    assert real.text == "real"
    assert fake.status_code == 200
    assert [r.url for r in mcp_mock.requests] == [mcp_mock.url]


@pytest.mark.anyio
async def test_transport_without_respx() -> None:
    server = MockMCPServer(response_mode="json")
    async with httpx.AsyncClient(transport=server.transport()) as client:
        response = await client.post(server.url, json=INIT, headers=ACCEPT)
    assert response.json()["result"]["protocolVersion"] == "2025-11-25"


@pytest.mark.anyio
async def test_standalone_context_manager_next_to_the_fixture(mcp_mock: MockMCPServer) -> None:
    with MockMCPServer("http://standalone.test/mcp", response_mode="json") as other:
        async with httpx.AsyncClient() as client:
            first = await client.post(mcp_mock.url, json=INIT, headers=ACCEPT)
            second = await client.post(other.url, json=INIT, headers=ACCEPT)
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(mcp_mock.requests) == len(other.requests) == 1


def test_sync_clients_get_a_clear_error(mcp_mock: MockMCPServer) -> None:
    with httpx.Client() as client, pytest.raises(RuntimeError, match="async httpx clients"):
        client.post(mcp_mock.url, json=INIT, headers=ACCEPT)


@pytest.mark.anyio
async def test_network_stop_is_idempotent_and_closes_servers() -> None:
    network = MockNetwork()
    server = network.add(MockMCPServer("http://n.test/mcp"))
    with network:
        assert network.started
    network.stop()
    assert not network.started
    async with httpx.AsyncClient(transport=server.transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(server.url, json=INIT, headers=ACCEPT)


def test_fixtures_do_not_leak_between_tests(tmp_path: Path) -> None:
    # A separate pytest run: the plugin must come in through its entry point alone.
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import httpx
            import pytest

            from wire_data import INIT, ACCEPT


            @pytest.fixture
            def anyio_backend():
                return "asyncio"


            @pytest.mark.anyio
            async def test_one(mcp_mock):
                mcp_mock.add_tool(lambda: "x", name="t")
                mcp_mock.faults.status(503, times=None)
                mcp_mock.state["dirty"] = True
                async with httpx.AsyncClient() as client:
                    response = await client.post(mcp_mock.url, json=INIT, headers=ACCEPT)
                assert response.status_code == 503


            @pytest.mark.anyio
            async def test_two(mcp_mock):
                assert mcp_mock.tools == []
                assert mcp_mock.faults.all == []
                assert mcp_mock.state == {}
                assert len(mcp_mock.requests) == 0
                async with httpx.AsyncClient() as client:
                    response = await client.post(mcp_mock.url, json=INIT, headers=ACCEPT)
                assert response.status_code == 200


            def test_three_respx_is_gone():
                from mcp_resilient.testing import _network
                assert httpx.AsyncClient._transport_for_url.__module__ == "httpx._client"
                assert _network._STARTED == []


            @pytest.mark.mcp_mock(url="http://other.test/x", response_mode="json")
            def test_marker(mcp_mock):
                assert mcp_mock.url == "http://other.test/x"
                assert mcp_mock.response_mode == "json"
            """
        )
    )
    (tmp_path / "wire_data.py").write_text(f"INIT = {INIT!r}\nACCEPT = {ACCEPT!r}\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_plugin_import_needs_no_respx() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["respx"] = None  # as if respx were not installed
        import mcp_resilient.testing.plugin as plugin
        assert "mcp_resilient.testing._server" not in sys.modules
        assert callable(plugin.mcp_mock)
        from mcp_resilient.testing import MockMCPServer, MockNetwork
        MockMCPServer()
        try:
            MockNetwork().start()
        except RuntimeError as error:
            assert "needs respx" in str(error)
        else:
            raise AssertionError("started without respx")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("mcp_resilient")
    assert any("mcp_mock(" in line for line in pytestconfig.getini("markers"))


def test_fixture_in_a_sync_test(mcp_mock: Any) -> None:
    # The fixture works in plain sync tests too (no event loop needed to set it up).
    assert mcp_mock.url == "http://mcp.test/mcp"
