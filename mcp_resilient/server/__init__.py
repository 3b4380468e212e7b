"""The server kit: make a FastMCP 4 server a replica clients can fail over to.

```python
from fastmcp import FastMCP
from mcp_resilient.server import RedisStore, SQLiteStore, add_resilience

mcp = FastMCP("app")
add_resilience(mcp, RedisStore("redis://127.0.0.1:6379/0"))   # or SQLiteStore("state.db")
```

``@transactional`` tools commit their session state writes with their outcome
(docs/exactly-once.md, "Transactional tools").

Needs the ``server`` extra (``fastmcp``, ``redis``). See docs/server-kit.md and, for the
wire contract of idempotency keys, docs/exactly-once.md.
"""

from __future__ import annotations

from .._classify import (
    IDEMPOTENCY_CAPABILITY,
    IDEMPOTENCY_META_KEY,
    LEDGER_CONFLICT,
    LEDGER_IN_PROGRESS,
    LEDGER_KEY_CONFLICT,
    LEDGER_STARTED_NOT_FINISHED,
    LEDGER_UNAVAILABLE,
    STATE_ID_META_KEY,
)
from ._drain import DEFAULT_DRAIN_TIMEOUT, Drain, DrainMiddleware, serve
from ._kit import (
    DEFAULT_SESSION_TTL,
    REPLAYED_META_KEY,
    IdempotencyMiddleware,
    Resilience,
    SessionState,
    add_resilience,
    default_principal,
    session_state,
)
from ._ledger import DEFAULT_LEASE, DEFAULT_RESULT_TTL, DEFAULT_WAIT, Ledger, LedgerError
from ._redis import RedisStore
from ._store import (
    Commit,
    CommitResult,
    LedgerRecord,
    NotReplicatedError,
    SQLiteStore,
    StateValue,
    Store,
    StoreError,
)
from ._tx import DEFAULT_ATTEMPTS, after_commit, transactional

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_LEASE",
    "DEFAULT_RESULT_TTL",
    "DEFAULT_SESSION_TTL",
    "DEFAULT_WAIT",
    "IDEMPOTENCY_CAPABILITY",
    "IDEMPOTENCY_META_KEY",
    "LEDGER_CONFLICT",
    "LEDGER_IN_PROGRESS",
    "LEDGER_KEY_CONFLICT",
    "LEDGER_STARTED_NOT_FINISHED",
    "LEDGER_UNAVAILABLE",
    "REPLAYED_META_KEY",
    "STATE_ID_META_KEY",
    "Commit",
    "CommitResult",
    "Drain",
    "DrainMiddleware",
    "IdempotencyMiddleware",
    "Ledger",
    "LedgerError",
    "LedgerRecord",
    "NotReplicatedError",
    "PostgresStore",
    "RedisStore",
    "Resilience",
    "SQLiteStore",
    "SessionState",
    "StateValue",
    "Store",
    "StoreError",
    "add_resilience",
    "after_commit",
    "default_principal",
    "serve",
    "session_state",
    "transactional",
]


def __getattr__(name: str) -> object:
    """``PostgresStore`` needs the ``postgres`` extra (psycopg): imported on first use."""
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
