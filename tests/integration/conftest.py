"""Fixtures that run real example servers (and Redis) as child processes on loopback.

Everything started here is stopped in teardown, also when the test or the start fails.
When a test fails, the tail of each server's log is printed with the test's report.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Protocol

import pytest

from examples._haproxy import ROUND_ROBIN_CONFIG, HAProxyProcess, haproxy_path
from examples._services import (
    PostgresProcess,
    RedisClusterProcess,
    RedisSentinelSet,
    postgres_bindir,
)
from tests.rig import RedisProcess, ServerCluster, ServerProcess, redis_server_path

INTEGRATION_DIR = Path(__file__).resolve().parent
CLUSTER_SIZE = 3
CLUSTER_START_TIMEOUT = 120.0
"""A bound, not a target: three servers importing FastMCP at once on a loaded 2-core
machine can take a minute to answer their first health check."""
START_BOUND = CLUSTER_START_TIMEOUT
"""The same bound under the name the kit's tests use."""
PLAIN_TOOLS = {"MCP_TRANSACTIONAL": "0"}
"""Server env: the example's state-changing tools are not transactional."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory is an integration test (``-m "not integration"``)."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report so teardown knows whether to dump server logs."""
    report = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    return report


_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_reports_key, {})
    return any(r.failed for r in reports.values())


def _dump_logs(request: pytest.FixtureRequest, servers: list[ServerProcess]) -> None:
    if not _failed(request):
        return
    for server in servers:
        print(
            f"\n----- {server.instance} ({server.log_path}) -----\n{server.log_tail(60)}",
            file=sys.stderr,
        )


@pytest.fixture(scope="session")
def redis_server() -> Generator[RedisProcess, None, None]:
    """One throwaway redis-server for the whole run (tests isolate by key prefix)."""
    yield from running_redis()


def running_redis() -> Generator[RedisProcess, None, None]:
    """Start a throwaway redis-server for a fixture to ``yield from``; always cleaned up.

    Missing ``redis-server``: skipped locally, but a failure in CI (env ``CI`` set),
    where a silent skip would hide every Redis test.
    """
    _require(redis_server_path() is not None, "redis-server", "redis-server")
    redis = RedisProcess().start()
    try:
        yield redis
    finally:
        redis.cleanup()


def _require(found: bool, what: str, package: str) -> None:
    """Skip when ``what`` is missing locally; fail in CI (env ``CI``), where a skip hides tests."""
    if found:
        return
    reason = f"{what} is not installed (apt-get install -y {package})"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


def running_redis_cluster() -> Generator[RedisClusterProcess, None, None]:
    """A 3-primary Redis Cluster with a replica each, for a fixture to ``yield from``."""
    _require(shutil.which("redis-cli") is not None, "redis-cli", "redis-server")
    _require(redis_server_path() is not None, "redis-server", "redis-server")
    cluster = RedisClusterProcess().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


def running_redis_sentinel() -> Generator[RedisSentinelSet, None, None]:
    """A Redis primary, its replica and a Sentinel, for a fixture to ``yield from``."""
    _require(shutil.which("redis-sentinel") is not None, "redis-sentinel", "redis-sentinel")
    sentinel = RedisSentinelSet().start()
    try:
        yield sentinel
    finally:
        sentinel.cleanup()


def running_postgres() -> Generator[PostgresProcess, None, None]:
    """A throwaway PostgreSQL server, for a fixture to ``yield from``."""
    _require(postgres_bindir() is not None, "PostgreSQL", "postgresql")
    server = PostgresProcess().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Generator[RedisClusterProcess, None, None]:
    """One Redis Cluster for the whole run (tests isolate by key prefix)."""
    yield from running_redis_cluster()


@pytest.fixture
def redis_cluster_env(redis_cluster: RedisClusterProcess) -> dict[str, str]:
    """Server env for state in the Redis Cluster, with a key prefix of its own."""
    return {"REDIS_URL": redis_cluster.url, "STATE_PREFIX": f"test-{uuid.uuid4().hex}"}


@pytest.fixture
def redis_env(redis_server: RedisProcess) -> dict[str, str]:
    """Server env for Redis state with a key prefix of its own (no cross-test leaks)."""
    return {"REDIS_URL": redis_server.url, "STATE_PREFIX": f"test-{uuid.uuid4().hex}"}


@pytest.fixture
def state_db(tmp_path: Path) -> Path:
    """A fresh SQLite state file for this test."""
    return tmp_path / "state.sqlite3"


class ServerFactory(Protocol):
    """``server_factory(instance, env=..., start=True, timeout=20.0, module=...)``."""

    def __call__(
        self,
        instance: str = ...,
        *,
        env: Mapping[str, str] | None = ...,
        start: bool = ...,
        timeout: float = ...,
        module: str = ...,
    ) -> ServerProcess: ...


@pytest.fixture
def server_factory(
    request: pytest.FixtureRequest, tmp_path: Path, state_db: Path
) -> Generator[ServerFactory, None, None]:
    """Start servers with custom env; all stopped at teardown.

    ``env`` is the whole backend choice: without ``REDIS_URL`` or ``STATE_DB`` the server
    gets this test's SQLite file, so instances made by one factory share state.
    """
    servers: list[ServerProcess] = []

    def factory(
        instance: str = "server",
        *,
        env: Mapping[str, str] | None = None,
        start: bool = True,
        timeout: float = 20.0,
        module: str = "examples.stateful_server",
    ) -> ServerProcess:
        merged: dict[str, str] = dict(env or {})
        if "REDIS_URL" not in merged:
            merged.setdefault("STATE_DB", str(state_db))
        server = ServerProcess(
            instance=instance,
            env=merged,
            log_path=tmp_path / "logs" / f"{instance}-{len(servers) + 1}.log",
            module=module,
        )
        servers.append(server)
        if start:
            server.start_healthy(timeout)
        return server

    try:
        yield factory
    finally:
        _dump_logs(request, servers)
        for server in servers:
            server.terminate()


@pytest.fixture
def mcp_server(server_factory: ServerFactory) -> ServerProcess:
    """One healthy instance with SQLite state (``.url`` is the ``/mcp`` endpoint)."""
    return server_factory("single")


def running_cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    env: Mapping[str, str],
    *,
    size: int = CLUSTER_SIZE,
    prefix: str = "node",
    timeout: float = START_BOUND,
) -> Generator[ServerCluster, None, None]:
    """Start a cluster for a fixture to ``yield from``: logs dumped on failure, always stopped."""
    cluster = ServerCluster(size, env=env, prefix=prefix, log_dir=tmp_path / "logs")
    cluster.start(timeout)
    try:
        yield cluster
    finally:
        _dump_logs(request, list(cluster))
        cluster.stop()


@pytest.fixture
def mcp_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, redis_env: dict[str, str]
) -> Generator[ServerCluster, None, None]:
    """Three healthy instances sharing state (and the event store) through Redis.

    Their state-changing tools are plain (``MCP_TRANSACTIONAL=0``): these are the tests
    of the client's own handling of a call in doubt, which a transactional tool spares it.
    """
    yield from running_cluster(request, tmp_path, {**redis_env, **PLAIN_TOOLS})


def running_haproxy(
    cluster: ServerCluster, tmp_path: Path, *, round_robin: bool = False
) -> Generator[HAProxyProcess, None, None]:
    """HAProxy in front of ``cluster`` for a fixture to ``yield from`` (sticky sessions, or
    plain round robin for the stateless era); always stopped. Missing ``haproxy``: skipped
    locally, a failure in CI (env ``CI`` set)."""
    if haproxy_path() is None:
        reason = "haproxy is not installed (apt-get install -y haproxy)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    config = {"config": ROUND_ROBIN_CONFIG} if round_robin else {}
    proxy = HAProxyProcess(cluster.urls, log_path=tmp_path / "logs" / "haproxy.log", **config)
    proxy.start(expect_instances=len(cluster))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def haproxy(mcp_cluster: ServerCluster, tmp_path: Path) -> Generator[HAProxyProcess, None, None]:
    """HAProxy (examples/haproxy/haproxy.cfg) in front of ``mcp_cluster``; ``.url`` is its MCP URL.

    Missing ``haproxy``: skipped locally, a failure in CI (env ``CI`` set).
    """
    if haproxy_path() is None:
        reason = "haproxy is not installed (apt-get install -y haproxy)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)
    proxy = HAProxyProcess(mcp_cluster.urls, log_path=tmp_path / "logs" / "haproxy.log")
    proxy.start(expect_instances=len(mcp_cluster))
    try:
        yield proxy
    finally:
        proxy.stop()
