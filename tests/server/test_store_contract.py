"""Every store the kit ships passes the store contract (SQLite, and a real redis-server)."""

from __future__ import annotations

from tests.server.store_contract import StoreContract


class TestStores(StoreContract):
    """``store`` comes from tests/server/conftest.py, parametrized over SQLite and Redis."""
