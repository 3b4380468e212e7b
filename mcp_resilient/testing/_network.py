"""Routing httpx traffic to fake servers with respx, and nothing else.

One respx router with a single catch-all route: requests to a host a fake server owns go to
that server; everything else (real loopback servers of other tests, say) passes through to
the real transport. respx's ``httpx`` mocker is used (it wraps each client's transport), so
a user's own ``respx_mock`` (the ``httpcore`` mocker) keeps working underneath.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from ._server import DEFAULT_URL, MockMCPServer

if TYPE_CHECKING:
    import respx

__all__ = ["MockClusterFactory", "MockNetwork", "MockServerFactory"]

logger = logging.getLogger("mcp_resilient.testing")

# Networks started and not yet stopped: a request routed by one network's router is offered
# to the others' servers too, because respx's mocker stops at the first router that answers.
_STARTED: list[MockNetwork] = []


def _in_async_context() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            return False
        return True
    return False


class MockNetwork:
    """The fake hosts of one test: add servers, ``start()``, and ``stop()`` at the end."""

    def __init__(self) -> None:
        self.servers: list[MockMCPServer] = []
        self._router: respx.MockRouter | None = None

    def add(self, server: MockMCPServer) -> MockMCPServer:
        """Serve ``server`` on this network (before or after ``start``)."""
        for url in server.urls:
            for other in self.servers:
                if other.serves(httpx.URL(url)):
                    raise ValueError(f"{url} is already served by another MockMCPServer")
        self.servers.append(server)
        return server

    def remove(self, server: MockMCPServer) -> None:
        self.servers.remove(server)

    def server_for(self, url: httpx.URL) -> MockMCPServer | None:
        """The server for a URL: the one serving it, else one owning its host (it says 404)."""
        for server in self.servers:
            if server.serves(url):
                return server
        for server in self.servers:
            if server.owns(url):
                return server
        return None

    @property
    def started(self) -> bool:
        return self._router is not None

    def start(self) -> MockNetwork:
        """Start intercepting httpx requests (async clients) to the servers' hosts."""
        if self._router is not None:
            return self
        try:
            import respx
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "mcp_resilient.testing needs respx: install mcp-resilient[testing]"
            ) from error
        router = respx.MockRouter(assert_all_called=False, assert_all_mocked=False, using="httpx")
        router.route().mock(side_effect=self._route)
        router.start()
        self._router = router
        _STARTED.append(self)
        return self

    def stop(self) -> None:
        """Stop intercepting and close every server (idempotent)."""
        router, self._router = self._router, None
        if self in _STARTED:
            _STARTED.remove(self)
        if router is not None:
            router.stop(quiet=True)
        for server in self.servers:
            server.close()

    def __enter__(self) -> MockNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _route(self, request: httpx.Request) -> httpx.Request | Awaitable[httpx.Response]:
        """respx side effect: a coroutine for our hosts, the request itself to pass through."""
        for network in [self, *(n for n in _STARTED if n is not self)]:
            server = network.server_for(request.url)
            if server is None:
                continue
            if not _in_async_context():
                raise RuntimeError(
                    "mcp_resilient.testing serves async httpx clients only "
                    f"(a sync request went to {request.url})"
                )
            return server.handle(request)
        return request


class MockServerFactory(Protocol):
    """Type of the ``mcp_mock_factory`` fixture."""

    def __call__(self, url: str | list[str] = DEFAULT_URL, **options: Any) -> MockMCPServer: ...


class MockClusterFactory(Protocol):
    """Type of the ``mcp_mock_cluster`` fixture."""

    def __call__(
        self,
        n: int = 3,
        *,
        host: str = "mcp-{i}.test",
        path: str = "/mcp",
        scheme: str = "http",
        **options: Any,
    ) -> MockMCPServer: ...
