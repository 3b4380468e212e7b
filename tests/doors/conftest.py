"""Fixtures for the doors tests: real example servers in their own processes, on loopback.

The server fixtures are the integration suite's own (imported, not copied), plus a small
cluster of example-server replicas that share state through one SQLite file, so a test
can kill the backend holding the session and still count executions on a survivor.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.integration.conftest import (  # noqa: F401  (fixtures and the log-dump hook)
    PLAIN_TOOLS,
    mcp_server,
    pytest_runtest_makereport,
    running_cluster,
    server_factory,
    state_db,
)
from tests.rig import ServerCluster

DOORS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """These tests run real servers: they are integration tests (``-m "not integration"``)."""
    for item in items:
        if DOORS_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Generator[ServerCluster, None, None]:
    """Two example-server replicas sharing state through one SQLite file."""
    # Plain tools: the doors show how each framework surfaces "outcome unknown".
    env = {"STATE_DB": str(tmp_path / "state.sqlite3"), **PLAIN_TOOLS}
    yield from running_cluster(request, tmp_path, env, size=2, prefix="door")
