"""Stores for the server-kit tests: SQLite always, Redis on a throwaway redis-server.

Redis runs as in tests/integration (the same ``RedisProcess`` launcher): skipped locally
when ``redis-server`` is missing, a failure in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mcp_resilient.server import RedisStore, SQLiteStore, Store
from tests.integration.conftest import running_redis
from tests.rig import RedisProcess


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    yield from running_redis()


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(kind, location, prefix): enough to open the same store in another process too."""
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "kit.sqlite3"), prefix
    redis: RedisProcess = request.getfixturevalue("redis_process")
    return "redis", redis.url, prefix


def open_store(kind: str, location: str, prefix: str) -> Store:
    if kind == "sqlite":
        return SQLiteStore(location, prefix=prefix)
    return RedisStore(location, prefix=prefix)


@pytest.fixture
async def store(store_spec: tuple[str, str, str]) -> AsyncIterator[Store]:
    opened = open_store(*store_spec)
    try:
        yield opened
    finally:
        await opened.close()
