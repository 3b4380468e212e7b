"""``@transactional``: a tool's state writes commit in one step with the ledger's outcome.

Inside a run of a transactional tool, ``session_state(ctx)`` stages its writes: reads go
to the store (and are remembered with the value seen), writes stay in the run, and reads
see them. When the tool returns, one ``Store.commit`` checks that nothing it read has
changed, applies the writes and records the outcome under the call's idempotency key,
all or nothing. So a run that dies before that commit did nothing at all, and the
ledger lets the next re-send run the tool afresh; a run that met a concurrent write is
re-run (a bounded number of times) instead of losing an update.
"""

from __future__ import annotations

import contextvars
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import anyio

from ._ledger import ConflictsExhausted, LostClaim
from ._store import Commit, CommitResult, LedgerRecord, StateValue, Store

__all__ = [
    "DEFAULT_ATTEMPTS",
    "StagedStore",
    "Transaction",
    "after_commit",
    "current_transaction",
    "transactional",
    "transactional_options",
]

DEFAULT_ATTEMPTS = 10
"""How often a transactional tool runs when its commits keep meeting concurrent writes."""
_MARK = "__mcp_resilient_transactional__"
_BACKOFF = 0.002
_MAX_BACKOFF = 0.05

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class TransactionalOptions:
    """What ``@transactional`` recorded on a tool function."""

    attempts: int = DEFAULT_ATTEMPTS


@overload
def transactional(fn: F, /) -> F: ...


@overload
def transactional(*, attempts: int = DEFAULT_ATTEMPTS) -> Callable[[F], F]: ...


def transactional(
    fn: F | None = None, /, *, attempts: int = DEFAULT_ATTEMPTS
) -> F | Callable[[F], F]:
    """Make a tool transactional: its ``session_state`` writes commit with its outcome.

    Put it under ``@mcp.tool``. The tool must have no effects other than its session state
    writes (it may run more than once; only one run commits): keep external calls out of
    it, or make them idempotent themselves. ``attempts`` bounds the runs when commits meet
    concurrent writes to the same keys.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def mark(function: F) -> F:
        if not callable(function) or not (
            inspect.isfunction(function) or inspect.ismethod(function)
        ):
            raise TypeError(
                "@transactional takes the tool's function: put it under @mcp.tool,"
                f" not over it (got {type(function).__name__})"
            )
        setattr(function, _MARK, TransactionalOptions(attempts))
        return function

    return mark(fn) if fn is not None else mark


def transactional_options(tool: object) -> TransactionalOptions | None:
    """The options of a transactional tool (a FastMCP tool or its function), else None."""
    function = getattr(tool, "fn", tool)
    options = getattr(function, _MARK, None)
    return options if isinstance(options, TransactionalOptions) else None


class StagedStore:
    """The store as a transactional run sees it: reads pass through and are remembered,
    writes stay here until the commit (and later reads see them).

    Only what ``SessionState`` uses is staged; the ledger's operations pass through, and
    ``copy_prefix`` is refused (``resume_session`` is not transactional).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = store.name
        self.prefix = store.prefix
        self.expect: dict[str, StateValue] = {}
        self.writes: dict[str, StateValue] = {}
        self.ttl: float | None = None
        self.touch: str | None = None

    # -- reads -------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        if key in self.writes:
            return _as_string(key, self.writes[key])
        if key not in self.expect:
            self.expect[key] = await self.store.get(key)
        return _as_string(key, self.expect[key])

    async def get_list(self, key: str) -> list[str]:
        if key in self.writes:
            return _as_list(key, self.writes[key])
        if key not in self.expect:
            self.expect[key] = tuple(await self.store.get_list(key))
        return _as_list(key, self.expect[key])

    # -- writes ------------------------------------------------------------------------

    def _stage(self, key: str, value: StateValue, ttl: float | None, touch: str | None) -> None:
        if touch is None:
            if ttl is not None:
                raise ValueError("a transaction writes keys outside its state without a TTL")
        elif self.touch is None:
            self.touch, self.ttl = touch, ttl
        elif (touch, ttl) != (self.touch, self.ttl):
            raise ValueError("a transaction writes one state: one prefix, one TTL")
        self.writes[key] = value

    async def set(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> None:
        self._stage(key, value, ttl, touch)

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None, touch: str | None
    ) -> str | None:
        current = await self.get(key)
        if current is None:
            self._stage(key, value, ttl, touch)
        return current

    async def incr(self, key: str, by: int, *, ttl: float | None, touch: str | None) -> int:
        current = await self.get(key)
        value = (int(current) if current is not None else 0) + by
        self._stage(key, str(value), ttl, touch)
        return value

    async def append(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> int:
        items = [*await self.get_list(key), value]
        self._stage(key, tuple(items), ttl, touch)
        return len(items)

    async def delete(self, key: str) -> None:
        self.writes[key] = None

    async def copy_prefix(self, old: str, new: str, *, ttl: float | None) -> int:
        raise RuntimeError("copying a session's state cannot be part of a transactional tool")

    # -- passed through ----------------------------------------------------------------

    async def ping(self) -> None:
        await self.store.ping()

    async def claim(
        self,
        key: str,
        owner: str,
        fingerprint: str,
        *,
        lease: float,
        ttl: float,
        transactional: bool = False,
    ) -> LedgerRecord | None:
        return await self.store.claim(
            key, owner, fingerprint, lease=lease, ttl=ttl, transactional=transactional
        )

    async def read(self, key: str) -> LedgerRecord | None:
        return await self.store.read(key)

    async def renew(self, key: str, owner: str, *, lease: float) -> bool:
        return await self.store.renew(key, owner, lease=lease)

    async def release(self, key: str, owner: str) -> None:
        await self.store.release(key, owner)

    async def complete(self, key: str, owner: str, outcome: str, *, ttl: float) -> bool:
        return await self.store.complete(key, owner, outcome, ttl=ttl)

    async def commit(self, commit: Commit) -> CommitResult:
        return await self.store.commit(commit)

    async def forget(self, key: str, owner: str) -> bool:
        return await self.store.forget(key, owner)

    async def close(self) -> None:
        """The real store belongs to the kit."""


def _as_string(key: str, value: StateValue) -> str | None:
    if isinstance(value, tuple):
        raise TypeError(f"{key} holds a list, not a string")
    return value


def _as_list(key: str, value: StateValue) -> list[str]:
    if isinstance(value, str):
        raise TypeError(f"{key} holds a string, not a list")
    return list(value or ())


@dataclass
class Transaction:
    """One attempt of a transactional run: its staged view of the store, and what to do
    once it committed."""

    staged: StagedStore
    owned: dict[str, tuple[str, float]] = field(default_factory=dict)
    """State owner checks this attempt made (the kit caches them once committed)."""
    _after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def after(self) -> list[Callable[[], Awaitable[None]]]:
        """The ``after_commit`` callbacks, in the order they were added."""
        return self._after

    def commit_of(
        self, record: str | None, owner: str | None, outcome: str, record_ttl: float
    ) -> Commit:
        staged = self.staged
        return Commit(
            expect=dict(staged.expect),
            writes=dict(staged.writes),
            ttl=staged.ttl,
            touch=staged.touch,
            record=record,
            owner=owner or "",
            outcome=outcome,
            record_ttl=record_ttl,
        )


_current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "mcp_resilient_transaction", default=None
)


def current_transaction() -> Transaction | None:
    """The transaction the running tool is part of (None outside a transactional tool)."""
    return _current.get()


def after_commit(callback: Callable[[], Awaitable[None]]) -> None:
    """Run ``callback`` once this transactional run has committed, before its answer.

    For what must not run twice and is not state (a notification, a call to another
    service): it runs at most once per call, and not at all if the process dies first or
    the run is re-run after a conflict (only the committed run's callbacks run).
    Outside a transactional tool it is refused.
    """
    tx = _current.get()
    if tx is None:
        raise RuntimeError("after_commit is for @transactional tools")
    tx._after.append(callback)


async def run_attempts(
    store: Store,
    attempts: int,
    body: Callable[[], Awaitable[str]],
    *,
    record: str | None,
    owner: str | None,
    record_ttl: float,
    on_commit: Callable[[Transaction], None] | None = None,
) -> str:
    """Run ``body`` in a fresh transaction until one commit goes through.

    ``body`` runs the tool and returns the encoded outcome. Raises ``LostClaim`` when the
    ledger record is no longer ours, ``ConflictsExhausted`` after ``attempts`` conflicts.
    """
    for attempt in range(attempts):
        tx = Transaction(StagedStore(store))
        token = _current.set(tx)
        try:
            encoded = await body()
        finally:
            _current.reset(token)
        result = await store.commit(tx.commit_of(record, owner, encoded, record_ttl))
        if result == "committed":
            if on_commit is not None:
                on_commit(tx)  # the caller runs the after_commit callbacks, once it answers
            return encoded
        if result == "lost":
            raise LostClaim(record)
        # Someone wrote what we read: run again on fresh reads, after a short random pause
        # so that the runs that collided spread out.
        await anyio.sleep(random.uniform(0, min(_MAX_BACKOFF, _BACKOFF * 2**attempt)))
    raise ConflictsExhausted(attempts)
