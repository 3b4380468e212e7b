"""pytest plugin (entry point ``pytest11``): fixtures serving fake MCP servers.

pytest loads this module in every run once mcp-resilient is installed, so it imports nothing
heavy at module level and does not need respx until a fixture is used.

- ``mcp_mock``: a ready ``MockMCPServer`` at ``http://mcp.test/mcp``. Options through the
  marker: ``@pytest.mark.mcp_mock(response_mode="json")``.
- ``mcp_mock_cluster(n=3, **options)``: one server (one shared backend) at ``n`` URLs,
  ``http://mcp-1.test/mcp`` ... ``http://mcp-n.test/mcp``.
- ``mcp_mock_factory(url, **options)``: more independent servers.
- ``mcp_mock_network``: the ``MockNetwork`` they are served on (respx is torn down after).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mcp_resilient.testing import (
        MockClusterFactory,
        MockMCPServer,
        MockNetwork,
        MockServerFactory,
    )

_DEFAULT_URL = "http://mcp.test/mcp"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mcp_mock(**options): options for the mcp_mock fixture's MockMCPServer "
        "(url, response_mode, stateful, get_stream, ...)",
    )


@pytest.fixture
def mcp_mock_network() -> Iterator[MockNetwork]:
    """The respx-backed network fake servers are served on; stopped after the test."""
    from mcp_resilient.testing import MockNetwork

    network = MockNetwork()
    network.start()
    try:
        yield network
    finally:
        network.stop()


@pytest.fixture
def mcp_mock(request: pytest.FixtureRequest, mcp_mock_network: MockNetwork) -> MockMCPServer:
    """A fake MCP server at ``http://mcp.test/mcp`` (configure with ``@pytest.mark.mcp_mock``)."""
    from mcp_resilient.testing import MockMCPServer

    marker = request.node.get_closest_marker("mcp_mock")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    url = options.pop("url", _DEFAULT_URL)
    return mcp_mock_network.add(MockMCPServer(url, **options))


@pytest.fixture
def mcp_mock_cluster(mcp_mock_network: MockNetwork) -> MockClusterFactory:
    """Factory: ``mcp_mock_cluster(n=3)`` is one server (shared state) at ``n`` URLs."""
    from mcp_resilient.testing import MockMCPServer

    def make(
        n: int = 3,
        *,
        host: str = "mcp-{i}.test",
        path: str = "/mcp",
        scheme: str = "http",
        **options: Any,
    ) -> MockMCPServer:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        urls = [f"{scheme}://{host.format(i=i)}{path}" for i in range(1, n + 1)]
        return mcp_mock_network.add(MockMCPServer(urls, **options))

    return make


@pytest.fixture
def mcp_mock_factory(mcp_mock_network: MockNetwork) -> MockServerFactory:
    """Factory for more independent fake servers: ``mcp_mock_factory("http://b.test/mcp")``."""
    from mcp_resilient.testing import MockMCPServer

    def make(url: str | list[str] = _DEFAULT_URL, **options: Any) -> MockMCPServer:
        return mcp_mock_network.add(MockMCPServer(url, **options))

    return make
