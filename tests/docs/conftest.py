"""The example server the doc snippets run against, and the report of skipped snippets."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.rig import ServerCluster

#: Replicas for failover snippets: the docs' ports 8000, 8001 and 8002, in that order.
REPLICAS = 3
SKIPPED_PROPERTY = "snippet_skipped"
#: Time the replicas have to come up (a loaded CI machine boots them slowly).
START_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def doc_servers(tmp_path_factory: pytest.TempPathFactory) -> Generator[ServerCluster, None, None]:
    """Three example-server replicas on free loopback ports, sharing one SQLite state file."""
    root: Path = tmp_path_factory.mktemp("doc-servers")
    cluster = ServerCluster(
        REPLICAS,
        env={"STATE_DB": str(root / "state.sqlite3")},
        prefix="docs",
        log_dir=root / "logs",
    )
    cluster.start(timeout=START_TIMEOUT)
    try:
        yield cluster
    finally:
        cluster.stop()


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the snippets a page test skipped (recorded as user properties)."""
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == SKIPPED_PROPERTY:
            _skipped.append(str(value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List every skipped snippet with its reason, so a skip is never silent."""
    if _skipped:
        terminalreporter.section("doc snippets skipped")
        for line in _skipped:
            terminalreporter.write_line(line)
