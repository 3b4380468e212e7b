"""Every store the kit ships passes the store contract (SQLite, and a real redis-server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from examples._services import RedisClusterProcess
from mcp_resilient.server import Commit, RedisStore, Store, StoreError
from tests.server.conftest import open_store
from tests.server.store_contract import StoreContract


class TestStores(StoreContract):
    """``store`` comes from tests/server/conftest.py, parametrized over SQLite, Redis, Redis
    with Sentinel and PostgreSQL (the cluster runs below)."""

    @pytest.fixture
    async def store(self, store_spec: tuple[str, str, str]) -> AsyncIterator[Store]:
        # The cluster's cases are deselected (tests/server/conftest.py): it runs the
        # contract in TestStoresInACluster, with its own refusals.
        opened = open_store(*store_spec)
        yield opened
        await opened.close()


class TestStoresInACluster(StoreContract):
    """What a Redis Cluster cannot do atomically it refuses (never half of it)."""

    @pytest.fixture
    async def store(self, redis_cluster: RedisClusterProcess) -> AsyncIterator[Store]:
        opened = RedisStore(redis_cluster.url, prefix=f"t{uuid.uuid4().hex[:12]}:")
        yield opened
        await opened.close()

    async def test_commit_slides_its_state_ttl_only(self, store: Store) -> None:
        state = self.session(store)
        outside = f"{store.prefix}other:{uuid.uuid4().hex}"
        commit = Commit(writes={state + "n": "1", outside: "x"}, ttl=60, touch=state)
        with pytest.raises(StoreError, match="one hash slot"):
            await store.commit(commit)
        assert await store.get(state + "n") is None and await store.get(outside) is None
