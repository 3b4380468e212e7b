"""Stores for the server-kit tests: SQLite always, Redis on a throwaway redis-server.

Redis runs as in tests/integration (the same ``RedisProcess`` launcher): skipped locally
when ``redis-server`` is missing, a failure in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from examples._services import PostgresProcess, RedisClusterProcess, RedisSentinelSet
from mcp_resilient.server import RedisStore, SQLiteStore, Store
from tests.integration.conftest import (
    running_postgres,
    running_redis,
    running_redis_cluster,
    running_redis_sentinel,
)
from tests.rig import RedisProcess

#: Every store the contract tests run against: SQLite, one Redis, a Redis Cluster (3
#: primaries, a replica each), a Redis primary/replica pair under Sentinel, PostgreSQL.
STORE_KINDS = ["sqlite", "redis", "redis-cluster", "redis-sentinel", "postgres"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    yield from running_redis()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    yield from running_redis_cluster()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSet]:
    yield from running_redis_sentinel()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresProcess]:
    yield from running_postgres()


@pytest.fixture(params=STORE_KINDS)
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(kind, location, prefix): enough to open the same store in another process too."""
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    kind: str = request.param
    if kind == "sqlite":
        return kind, str(tmp_path / "kit.sqlite3"), prefix
    if kind == "redis":
        redis: RedisProcess = request.getfixturevalue("redis_process")
        return kind, redis.url, prefix
    if kind == "redis-cluster":
        cluster: RedisClusterProcess = request.getfixturevalue("redis_cluster")
        return kind, cluster.url, prefix
    if kind == "redis-sentinel":
        sentinel: RedisSentinelSet = request.getfixturevalue("redis_sentinel")
        return kind, sentinel.url, prefix
    postgres: PostgresProcess = request.getfixturevalue("postgres_server")
    return kind, postgres.url, prefix


def open_store(kind: str, location: str, prefix: str) -> Store:
    if kind == "sqlite":
        return SQLiteStore(location, prefix=prefix)
    if kind == "postgres":
        from mcp_resilient.server import PostgresStore

        return PostgresStore(location, prefix=prefix)
    return RedisStore(location, prefix=prefix)


@pytest.fixture
async def store(store_spec: tuple[str, str, str]) -> AsyncIterator[Store]:
    opened = open_store(*store_spec)
    try:
        yield opened
    finally:
        await opened.close()


#: Test modules about the kit itself, not the store: they run on SQLite and one Redis
#: only (the scaled-out stores run the contract suite, the ledger and the commit tests).
_KIT_MODULES = {"test_kit.py", "test_state.py"}
_SCALED_OUT = {"redis-cluster", "redis-sentinel", "postgres"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the suite's time bounded: the kit's own tests need not run on five stores, and
    the generic contract class leaves the cluster to ``TestStoresInACluster``."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("store_spec") if callspec is not None else None
        kit_only = kind in _SCALED_OUT and item.path.name in _KIT_MODULES
        cluster_elsewhere = kind == "redis-cluster" and getattr(item.cls, "__name__", "") == (
            "TestStores"
        )
        if kit_only or cluster_elsewhere:
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
