"""The store protocol behind the server kit, and its SQLite implementation.

One store holds two kinds of data for every replica of a service: per-session state
(``mcp:session:{id}:{key}``, with a sliding TTL) and the idempotency ledger
(``mcp:idem:{scope}:{key}``). Every operation is atomic across processes; the ledger's
``claim`` is the one the exactly-once guarantee rests on.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeAlias, TypeVar, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread

__all__ = [
    "Commit",
    "CommitResult",
    "LedgerRecord",
    "NotReplicatedError",
    "SQLiteStore",
    "StateValue",
    "Store",
    "StoreError",
    "redact_url",
]

T = TypeVar("T")

#: SQLite waits this long for a competing writer before failing (seconds).
SQLITE_BUSY_TIMEOUT = 10.0
#: Expired rows are swept at most this often (seconds); reads ignore them meanwhile.
_SWEEP_INTERVAL = 30.0


class StoreError(Exception):
    """The store could not be reached or refused the operation.

    Its message never carries credentials: stores name themselves with ``redact_url``.
    """


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://app:***@host:6379/0``): safe for errors and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class NotReplicatedError(StoreError):
    """The write happened on the primary but too few replicas confirmed it in time.

    It may survive, or vanish if the primary fails before it replicates: the store does
    not acknowledge it (see ``wait_replicas`` in docs/stores.md).
    """


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """What the ledger holds under one key.

    ``lease_left`` is measured on the store's own clock, so replicas with skewed clocks
    agree on whether the owner is still alive.
    """

    state: Literal["running", "done"]
    fingerprint: str
    lease_left: float
    outcome: str | None = None
    transactional: bool = False
    """Claimed by a transactional run: while running it has written nothing, so once its
    lease ends another claimant may take it over and run the tool afresh."""


StateValue: TypeAlias = "str | tuple[str, ...] | None"
"""A key's value as a commit sees it: a string, a list (a tuple of strings), or absent."""

CommitResult: TypeAlias = Literal["committed", "conflict", "lost"]
"""``committed``: all applied; ``conflict``: an expected value changed; ``lost``: the
ledger record is no longer running under this owner. Nothing is written unless committed."""


@dataclass(frozen=True, slots=True)
class Commit:
    """A transactional run's effects, applied with its ledger outcome all at once or not at all.

    ``expect`` holds every key the run read, with the value it saw (optimistic
    concurrency: any change since is a conflict). ``writes`` holds every key it wrote,
    with its final value (``None`` deletes it). Keys under ``touch`` get ``ttl`` and slide
    the TTL of every key under ``touch``, as ``Store.set`` does; other keys are written
    without a TTL. ``record`` (absent for an unkeyed call) is the ledger record the run
    claimed as ``owner``: it becomes done with ``outcome`` and lives ``record_ttl``
    seconds; a record under ``touch`` travels with its state (``copy_prefix``).
    """

    expect: Mapping[str, StateValue] = field(default_factory=dict)
    writes: Mapping[str, StateValue] = field(default_factory=dict)
    ttl: float | None = None
    touch: str | None = None
    record: str | None = None
    owner: str = ""
    outcome: str = ""
    record_ttl: float = 0.0


@runtime_checkable
class Store(Protocol):
    """What the kit needs from a shared store. Values are strings; TTLs are seconds."""

    name: str
    prefix: str
    """Prepended to every key (``mcp:`` by default): isolates deployments sharing a store."""

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers."""
        ...

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> None:
        """Set ``key``; ``touch`` is a key prefix whose keys all get the same TTL (sliding)."""
        ...

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None, touch: str | None
    ) -> str | None:
        """Set ``key`` unless it holds a live value: None if set, else the value it holds.

        What binds a session (or state id) to its principal: two replicas racing to write
        the owner marker agree on one owner. Sliding ``touch`` as ``set`` does.
        """
        ...

    async def incr(self, key: str, by: int, *, ttl: float | None, touch: str | None) -> int: ...

    async def append(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> int:
        """Append to the list at ``key``; returns its new length."""
        ...

    async def get_list(self, key: str) -> list[str]: ...

    async def delete(self, key: str) -> None: ...

    async def copy_prefix(self, old: str, new: str, *, ttl: float | None) -> int:
        """Replace every key under ``new`` by a copy of those under ``old``; how many copied."""
        ...

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
        """Record "started" under ``key`` unless a record exists: None if we now own it.

        ``transactional``: mark the record so (its run writes nothing before its
        ``commit``), and take over a transactional record with the same fingerprint that
        is still running but whose lease has ended (its owner died before committing).
        """
        ...

    async def read(self, key: str) -> LedgerRecord | None: ...

    async def renew(self, key: str, owner: str, *, lease: float) -> bool:
        """Extend the owner's lease; False if the record is gone or not running."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """End the owner's lease now, leaving the record "running" (it never finished)."""
        ...

    async def complete(self, key: str, owner: str, outcome: str, *, ttl: float) -> bool:
        """Store the outcome and mark the record done; False if it is not ours."""
        ...

    async def commit(self, commit: Commit) -> CommitResult:
        """Apply a transactional run's ``Commit`` in one atomic step (see ``Commit``).

        Checks, in order: ``commit.record`` is running under ``commit.owner`` (else
        ``lost``), every key in ``expect`` still holds its value (else ``conflict``); then
        writes, slides the TTL, and marks the record done, all or nothing.
        """
        ...

    async def forget(self, key: str, owner: str) -> bool:
        """Delete the owner's running record (a leg that is not the call's outcome, such as
        a 2026-07-28 ``input_required`` round); False if it is not ours or is done."""
        ...

    async def close(self) -> None: ...


def _expiry(ttl: float | None) -> float | None:
    return None if ttl is None else time.time() + ttl


class SQLiteStore:
    """The store in one SQLite file shared by the processes of one machine.

    Each worker thread keeps its own connection (sqlite3 connections must not cross
    threads); every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent
    processes serialize on the file lock and never see half an operation. Expiry is
    checked on read and swept now and then.
    """

    name = "sqlite"

    def __init__(
        self, path: str | Path, *, prefix: str = "mcp:", busy_timeout: float = SQLITE_BUSY_TIMEOUT
    ) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._last_sweep = 0.0
        self._create()

    def _create(self) -> None:
        """WAL mode and the tables, also when several replicas start on one file at once.

        Switching to WAL does not wait on the busy handler: a replica that races another
        one through it gets "database is locked" at once. Retry, bounded by the busy timeout.
        """
        conn = self._conn()
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(
                    """
                    CREATE TABLE IF NOT EXISTS mcp_kv (
                        key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
                    CREATE TABLE IF NOT EXISTS mcp_ledger (
                        key TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT NOT NULL,
                        fingerprint TEXT NOT NULL, lease_until REAL NOT NULL, outcome TEXT,
                        expires_at REAL NOT NULL, tx INTEGER NOT NULL DEFAULT 0);
                    """
                )
                columns = {row[1] for row in conn.execute("PRAGMA table_info(mcp_ledger)")}
                if "tx" not in columns:  # a file from before transactional tools
                    conn.execute("ALTER TABLE mcp_ledger ADD COLUMN tx INTEGER NOT NULL DEFAULT 0")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: explicit transactions only (BEGIN IMMEDIATE takes the
            # write lock up front, so two writers never deadlock upgrading a read lock).
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            self._local.conn = conn
        return conn

    def _tx(self, body: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``body(conn, now)`` in one write transaction."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            result = body(conn, now)
            if now - self._last_sweep > _SWEEP_INTERVAL:
                self._last_sweep = now
                conn.execute("DELETE FROM mcp_kv WHERE expires_at < ?", (now,))
                conn.execute("DELETE FROM mcp_ledger WHERE expires_at < ?", (now,))
            conn.execute("COMMIT")
            return result
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    # -- key/value ---------------------------------------------------------------------

    @staticmethod
    def _touch(
        conn: sqlite3.Connection, prefix: str | None, expires: float | None, now: float
    ) -> None:
        """Slide the live keys under ``prefix``; expired ones stay expired (never revived)."""
        if prefix is not None:
            conn.execute(
                "UPDATE mcp_kv SET expires_at = ? WHERE substr(key, 1, ?) = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (expires, len(prefix), prefix, now),
            )

    @staticmethod
    def _live(conn: sqlite3.Connection, key: str, now: float) -> str | None:
        row = conn.execute(
            "SELECT value FROM mcp_kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (key, now),
        ).fetchone()
        return None if row is None else str(row[0])

    async def ping(self) -> None:
        await self._run(lambda: self._conn().execute("SELECT 1").fetchone())

    async def get(self, key: str) -> str | None:
        return await self._run(lambda: self._live(self._conn(), key, time.time()))

    async def set(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> None:
        def body(conn: sqlite3.Connection, now: float) -> None:
            expires = _expiry(ttl)
            conn.execute(
                "INSERT INTO mcp_kv(key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT(key)"
                " DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, value, expires),
            )
            self._touch(conn, touch, expires, now)

        await self._run(lambda: self._tx(body))

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None, touch: str | None
    ) -> str | None:
        def body(conn: sqlite3.Connection, now: float) -> str | None:
            current = self._live(conn, key, now)
            if current is not None:
                return current
            expires = _expiry(ttl)
            conn.execute(
                "INSERT OR REPLACE INTO mcp_kv(key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, expires),
            )
            self._touch(conn, touch, expires, now)
            return None

        return await self._run(lambda: self._tx(body))

    async def incr(self, key: str, by: int, *, ttl: float | None, touch: str | None) -> int:
        def body(conn: sqlite3.Connection, now: float) -> int:
            current = self._live(conn, key, now)
            value = (int(current) if current is not None else 0) + by
            expires = _expiry(ttl)
            conn.execute(
                "INSERT OR REPLACE INTO mcp_kv(key, value, expires_at) VALUES (?, ?, ?)",
                (key, str(value), expires),
            )
            self._touch(conn, touch, expires, now)
            return value

        return int(await self._run(lambda: self._tx(body)))

    async def append(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> int:
        def body(conn: sqlite3.Connection, now: float) -> int:
            current = self._live(conn, key, now)
            items: list[str] = json.loads(current) if current is not None else []
            items.append(value)
            expires = _expiry(ttl)
            conn.execute(
                "INSERT OR REPLACE INTO mcp_kv(key, value, expires_at) VALUES (?, ?, ?)",
                (key, json.dumps(items), expires),
            )
            self._touch(conn, touch, expires, now)
            return len(items)

        return int(await self._run(lambda: self._tx(body)))

    async def get_list(self, key: str) -> list[str]:
        raw = await self.get(key)
        return [str(item) for item in json.loads(raw)] if raw is not None else []

    async def delete(self, key: str) -> None:
        def body(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("DELETE FROM mcp_kv WHERE key = ?", (key,))

        await self._run(lambda: self._tx(body))

    async def copy_prefix(self, old: str, new: str, *, ttl: float | None) -> int:
        def body(conn: sqlite3.Connection, now: float) -> int:
            conn.execute("DELETE FROM mcp_kv WHERE substr(key, 1, ?) = ?", (len(new), new))
            cursor = conn.execute(
                "INSERT INTO mcp_kv(key, value, expires_at) SELECT ? || substr(key, ?), value, ?"
                " FROM mcp_kv WHERE substr(key, 1, ?) = ? AND (expires_at IS NULL OR expires_at > ?)",
                (new, len(old) + 1, _expiry(ttl), len(old), old, now),
            )
            copied = int(cursor.rowcount)
            # Transactional records committed with this state travel with it.
            conn.execute("DELETE FROM mcp_ledger WHERE substr(key, 1, ?) = ?", (len(new), new))
            conn.execute(
                "INSERT INTO mcp_ledger(key, state, owner, fingerprint, lease_until, outcome,"
                " expires_at, tx) SELECT ? || substr(key, ?), state, owner, fingerprint,"
                " lease_until, outcome, expires_at, tx FROM mcp_ledger"
                " WHERE substr(key, 1, ?) = ? AND state = 'done' AND expires_at > ?",
                (new, len(old) + 1, len(old), old, now),
            )
            return copied

        return int(await self._run(lambda: self._tx(body)))

    # -- the ledger --------------------------------------------------------------------

    @staticmethod
    def _record(row: tuple[object, ...] | None, now: float) -> LedgerRecord | None:
        if row is None:
            return None
        state, fingerprint, lease_until, outcome, tx = row
        return LedgerRecord(
            state="done" if state == "done" else "running",
            fingerprint=str(fingerprint),
            lease_left=float(lease_until) - now,  # type: ignore[arg-type]
            outcome=None if outcome is None else str(outcome),
            transactional=bool(tx),
        )

    _SELECT = "SELECT state, fingerprint, lease_until, outcome, tx FROM mcp_ledger"

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
        def body(conn: sqlite3.Connection, now: float) -> LedgerRecord | None:
            row = conn.execute(
                f"{self._SELECT} WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is not None:
                record = self._record(row, now)
                if not (
                    transactional
                    and record is not None
                    and record.transactional
                    and record.state == "running"
                    and record.lease_left <= 0
                    and record.fingerprint == fingerprint
                ):
                    return record
            conn.execute(
                "INSERT OR REPLACE INTO mcp_ledger(key, state, owner, fingerprint, lease_until,"
                " outcome, expires_at, tx) VALUES (?, 'running', ?, ?, ?, NULL, ?, ?)",
                (key, owner, fingerprint, now + lease, now + max(ttl, lease), int(transactional)),
            )
            return None

        return await self._run(lambda: self._tx(body))

    async def read(self, key: str) -> LedgerRecord | None:
        def body() -> LedgerRecord | None:
            now = time.time()
            row = (
                self._conn()
                .execute(f"{self._SELECT} WHERE key = ? AND expires_at > ?", (key, now))
                .fetchone()
            )
            return self._record(row, now)

        return await self._run(body)

    async def renew(self, key: str, owner: str, *, lease: float) -> bool:
        def body(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute(
                "UPDATE mcp_ledger SET lease_until = ?, expires_at = max(expires_at, ?)"
                " WHERE key = ? AND owner = ? AND state = 'running'",
                (now + lease, now + lease, key, owner),
            )
            return cursor.rowcount == 1

        return bool(await self._run(lambda: self._tx(body)))

    async def release(self, key: str, owner: str) -> None:
        def body(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "UPDATE mcp_ledger SET lease_until = ? WHERE key = ? AND owner = ?"
                " AND state = 'running'",
                (now, key, owner),
            )

        await self._run(lambda: self._tx(body))

    async def complete(self, key: str, owner: str, outcome: str, *, ttl: float) -> bool:
        def body(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute(
                "UPDATE mcp_ledger SET state = 'done', outcome = ?, expires_at = ?"
                " WHERE key = ? AND owner = ?",
                (outcome, now + ttl, key, owner),
            )
            return cursor.rowcount == 1

        return bool(await self._run(lambda: self._tx(body)))

    async def commit(self, commit: Commit) -> CommitResult:
        def body(conn: sqlite3.Connection, now: float) -> CommitResult:
            if commit.record is not None:
                row = conn.execute(
                    "SELECT owner, state FROM mcp_ledger WHERE key = ? AND expires_at > ?",
                    (commit.record, now),
                ).fetchone()
                if row is None or row[0] != commit.owner or row[1] != "running":
                    return "lost"
            for key, want in commit.expect.items():
                if not _holds(self._live(conn, key, now), want):
                    return "conflict"
            touch = commit.touch
            expires = _expiry(commit.ttl)
            for key, value in commit.writes.items():
                if value is None:
                    conn.execute("DELETE FROM mcp_kv WHERE key = ?", (key,))
                    continue
                text = value if isinstance(value, str) else json.dumps(list(value))
                under = touch is not None and key.startswith(touch)
                conn.execute(
                    "INSERT OR REPLACE INTO mcp_kv(key, value, expires_at) VALUES (?, ?, ?)",
                    (key, text, expires if under else None),
                )
            if commit.writes:
                self._touch(conn, touch, expires, now)
            if commit.record is not None:
                conn.execute(
                    "UPDATE mcp_ledger SET state = 'done', outcome = ?, expires_at = ?"
                    " WHERE key = ?",
                    (commit.outcome, now + commit.record_ttl, commit.record),
                )
            return "committed"

        return await self._run(lambda: self._tx(body))

    async def forget(self, key: str, owner: str) -> bool:
        def body(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute(
                "DELETE FROM mcp_ledger WHERE key = ? AND owner = ? AND state = 'running'",
                (key, owner),
            )
            return cursor.rowcount == 1

        return bool(await self._run(lambda: self._tx(body)))

    async def close(self) -> None:
        """Connections belong to worker threads and close with them."""


def _holds(stored: str | None, want: StateValue) -> bool:
    """Does a stored SQLite value (lists are JSON) equal what a transaction read?"""
    if want is None or isinstance(want, str):
        return stored == want
    if stored is None:
        return not want
    try:
        items = json.loads(stored)
    except ValueError:
        return False
    return isinstance(items, list) and tuple(str(item) for item in items) == want
