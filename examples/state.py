"""Per-session state for the example server, shared between server processes.

Several example server instances stand in for the replicas of one service behind a
load balancer, so whatever a session wrote on one instance must be readable from the
others. Two backends give that: Redis when ``REDIS_URL`` is set, otherwise an SQLite
file that every process on the machine opens (nothing to install).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

#: SQLite waits this long for a competing writer before failing (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 10_000
DEFAULT_KEY_PREFIX = "mcp-resilient-example"


@dataclass(frozen=True)
class SessionSnapshot:
    """What one session holds: the counter and the notes, in order."""

    counter: int = 0
    notes: list[str] = field(default_factory=list)
    exists: bool = False


class StateStore(Protocol):
    """The few operations the example tools need; each is atomic across processes."""

    backend: str

    async def increment(self, session_id: str, by: int, call_id: str | None) -> int:
        """Add ``by`` to the counter and, with a call id, count one execution of it."""
        ...

    async def get_counter(self, session_id: str) -> int: ...

    async def set_counter(self, session_id: str, value: int) -> None: ...

    async def add_note(self, session_id: str, text: str) -> int:
        """Append a note; returns how many notes the session now has."""
        ...

    async def list_notes(self, session_id: str) -> list[str]: ...

    async def snapshot(self, session_id: str) -> SessionSnapshot: ...

    async def copy_session(self, old_session_id: str, new_session_id: str) -> SessionSnapshot:
        """Replace the new session's state by the old one's (so repeating it is harmless)."""
        ...

    async def executions(self, call_id: str) -> int:
        """How many times a call id has run, on any instance."""
        ...

    async def open_gate(self, name: str) -> None:
        """Open a named gate (tests use gates to order events across processes)."""
        ...

    async def gate_is_open(self, name: str) -> bool: ...

    async def close(self) -> None: ...


def default_sqlite_path() -> Path:
    """A per-user file in the temp dir, so processes started without config still share."""
    return Path(tempfile.gettempdir()) / "mcp-resilient-example-state.sqlite3"


class SQLiteStateStore:
    """State in one SQLite file; WAL plus a busy timeout keep concurrent processes safe.

    Every operation opens its own short-lived connection in a worker thread: the event
    loop never blocks on the file lock, and no connection is shared between threads.
    """

    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS sessions (
                    session_id TEXT PRIMARY KEY, counter INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE IF NOT EXISTS notes (
                    session_id TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
                    PRIMARY KEY (session_id, position));
                CREATE TABLE IF NOT EXISTS executions (
                    call_id TEXT PRIMARY KEY, count INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS gates (name TEXT PRIMARY KEY);
                """
            )

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE takes the write
        # lock up front, so two writers never deadlock upgrading a read lock).
        conn = sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        return conn

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    conn.execute(sql, args)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def _sync_increment(self, session_id: str, by: int, call_id: str | None) -> int:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO sessions(session_id, counter) VALUES (?, ?) "
                    "ON CONFLICT(session_id) DO UPDATE SET counter = counter + excluded.counter",
                    (session_id, by),
                )
                if call_id is not None:
                    conn.execute(
                        "INSERT INTO executions(call_id, count) VALUES (?, 1) "
                        "ON CONFLICT(call_id) DO UPDATE SET count = count + 1",
                        (call_id,),
                    )
                row = conn.execute(
                    "SELECT counter FROM sessions WHERE session_id = ?", (session_id,)
                ).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return int(row[0])

    def _sync_snapshot(self, session_id: str) -> SessionSnapshot:
        conn = self._connect()
        try:
            # One read transaction so the counter and notes are from the same moment.
            conn.execute("BEGIN")
            row = conn.execute(
                "SELECT counter FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            notes = [
                str(r[0])
                for r in conn.execute(
                    "SELECT text FROM notes WHERE session_id = ? ORDER BY position", (session_id,)
                )
            ]
            conn.execute("COMMIT")
        finally:
            conn.close()
        exists = row is not None or bool(notes)
        return SessionSnapshot(counter=int(row[0]) if row else 0, notes=notes, exists=exists)

    def _sync_add_note(self, session_id: str, text: str) -> int:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR IGNORE INTO sessions(session_id, counter) VALUES (?, 0)",
                    (session_id,),
                )
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM notes WHERE session_id = ?", (session_id,)
                ).fetchone()
                conn.execute(
                    "INSERT INTO notes(session_id, position, text) VALUES (?, ?, ?)",
                    (session_id, count, text),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return int(count) + 1

    def _sync_copy(self, old_session_id: str, new_session_id: str) -> SessionSnapshot:
        old = self._sync_snapshot(old_session_id)
        statements: list[tuple[str, tuple[object, ...]]] = [
            (
                "INSERT INTO sessions(session_id, counter) VALUES (?, ?) "
                "ON CONFLICT(session_id) DO UPDATE SET counter = excluded.counter",
                (new_session_id, old.counter),
            ),
            ("DELETE FROM notes WHERE session_id = ?", (new_session_id,)),
        ]
        statements += [
            (
                "INSERT INTO notes(session_id, position, text) VALUES (?, ?, ?)",
                (new_session_id, i, t),
            )
            for i, t in enumerate(old.notes)
        ]
        self._write(statements)
        return old

    def _sync_executions(self, call_id: str) -> int:
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT count FROM executions WHERE call_id = ?", (call_id,)
            ).fetchone()
        finally:
            conn.close()
        return int(row[0]) if row else 0

    def _sync_gate_is_open(self, name: str) -> bool:
        conn = self._connect()
        try:
            return (
                conn.execute("SELECT 1 FROM gates WHERE name = ?", (name,)).fetchone() is not None
            )
        finally:
            conn.close()

    async def increment(self, session_id: str, by: int, call_id: str | None) -> int:
        return await asyncio.to_thread(self._sync_increment, session_id, by, call_id)

    async def get_counter(self, session_id: str) -> int:
        return (await self.snapshot(session_id)).counter

    async def set_counter(self, session_id: str, value: int) -> None:
        await asyncio.to_thread(
            self._write,
            [
                (
                    "INSERT INTO sessions(session_id, counter) VALUES (?, ?) "
                    "ON CONFLICT(session_id) DO UPDATE SET counter = excluded.counter",
                    (session_id, value),
                )
            ],
        )

    async def add_note(self, session_id: str, text: str) -> int:
        return await asyncio.to_thread(self._sync_add_note, session_id, text)

    async def list_notes(self, session_id: str) -> list[str]:
        return (await self.snapshot(session_id)).notes

    async def snapshot(self, session_id: str) -> SessionSnapshot:
        return await asyncio.to_thread(self._sync_snapshot, session_id)

    async def copy_session(self, old_session_id: str, new_session_id: str) -> SessionSnapshot:
        return await asyncio.to_thread(self._sync_copy, old_session_id, new_session_id)

    async def executions(self, call_id: str) -> int:
        return await asyncio.to_thread(self._sync_executions, call_id)

    async def open_gate(self, name: str) -> None:
        await asyncio.to_thread(
            self._write, [("INSERT OR IGNORE INTO gates(name) VALUES (?)", (name,))]
        )

    async def gate_is_open(self, name: str) -> bool:
        return await asyncio.to_thread(self._sync_gate_is_open, name)

    async def close(self) -> None:
        """Nothing to release: connections never outlive an operation."""


class RedisStateStore:
    """State in Redis: one counter key and one list key per session, MULTI for atomicity."""

    backend = "redis"

    def __init__(self, url: str, prefix: str = DEFAULT_KEY_PREFIX) -> None:
        # Imported here so the SQLite path works without the redis package installed.
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, decode_responses=True)
        self._prefix = prefix

    def _counter_key(self, session_id: str) -> str:
        return f"{self._prefix}:counter:{session_id}"

    def _notes_key(self, session_id: str) -> str:
        return f"{self._prefix}:notes:{session_id}"

    def _exec_key(self, call_id: str) -> str:
        return f"{self._prefix}:executions:{call_id}"

    def _gate_key(self, name: str) -> str:
        return f"{self._prefix}:gate:{name}"

    async def increment(self, session_id: str, by: int, call_id: str | None) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(self._counter_key(session_id), by)
            if call_id is not None:
                pipe.incr(self._exec_key(call_id))
            results = await pipe.execute()
        return int(results[0])

    async def get_counter(self, session_id: str) -> int:
        value = await self._redis.get(self._counter_key(session_id))
        return int(value) if value is not None else 0

    async def set_counter(self, session_id: str, value: int) -> None:
        await self._redis.set(self._counter_key(session_id), value)

    async def add_note(self, session_id: str, text: str) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            # Touch the counter so a session with only notes still "exists".
            pipe.setnx(self._counter_key(session_id), 0)
            pipe.rpush(self._notes_key(session_id), text)
            results = await pipe.execute()
        return int(results[1])

    async def list_notes(self, session_id: str) -> list[str]:
        return [str(n) for n in await self._redis.lrange(self._notes_key(session_id), 0, -1)]

    async def snapshot(self, session_id: str) -> SessionSnapshot:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._counter_key(session_id))
            pipe.lrange(self._notes_key(session_id), 0, -1)
            counter, notes = await pipe.execute()
        return SessionSnapshot(
            counter=int(counter) if counter is not None else 0,
            notes=[str(n) for n in notes],
            exists=counter is not None or bool(notes),
        )

    async def copy_session(self, old_session_id: str, new_session_id: str) -> SessionSnapshot:
        old = await self.snapshot(old_session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._counter_key(new_session_id), old.counter)
            pipe.delete(self._notes_key(new_session_id))
            if old.notes:
                pipe.rpush(self._notes_key(new_session_id), *old.notes)
            await pipe.execute()
        return old

    async def executions(self, call_id: str) -> int:
        value = await self._redis.get(self._exec_key(call_id))
        return int(value) if value is not None else 0

    async def open_gate(self, name: str) -> None:
        await self._redis.set(self._gate_key(name), 1)

    async def gate_is_open(self, name: str) -> bool:
        return bool(await self._redis.exists(self._gate_key(name)))

    async def close(self) -> None:
        await self._redis.aclose()


def store_from_env(env: dict[str, str] | None = None) -> StateStore:
    """Redis when ``REDIS_URL`` is set, else SQLite at ``STATE_DB`` (or the temp default)."""
    env = dict(os.environ) if env is None else env
    redis_url = env.get("REDIS_URL")
    if redis_url:
        return RedisStateStore(redis_url, prefix=env.get("STATE_PREFIX", DEFAULT_KEY_PREFIX))
    return SQLiteStateStore(env.get("STATE_DB") or default_sqlite_path())
