"""The example server's state, on the server kit's store (shared by every instance).

Several example server instances stand in for the replicas of one service behind a
load balancer, so whatever a session wrote on one instance must be readable from the
others. The kit's store gives that: Redis when ``REDIS_URL`` is set, otherwise an SQLite
file that every process on the machine opens (nothing to install).

Per-session state (the counter and the notes) uses the kit's session state helper, so
the kit's ``resume_session`` carries it over. What is left here is the example's own:
the execution record that tests read to count how often a call really ran, and gates.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mcp_resilient.server import RedisStore, SessionState, SQLiteStore, Store

DEFAULT_KEY_PREFIX = "mcp:"
COUNTER = "counter"
NOTES = "notes"


@dataclass(frozen=True)
class SessionSnapshot:
    """What one session holds: the counter and the notes, in order."""

    counter: int = 0
    notes: list[str] = field(default_factory=list)


def default_sqlite_path() -> Path:
    """A per-user file in the temp dir, so processes started without config still share."""
    return Path(tempfile.gettempdir()) / "mcp-resilient-example-state.sqlite3"


def store_from_env(env: Mapping[str, str] | None = None) -> Store:
    """Redis when ``REDIS_URL`` is set (one server, ``redis+cluster://`` or
    ``redis+sentinel://``), PostgreSQL when ``POSTGRES_URL`` is, else SQLite at ``STATE_DB``
    (or the temp default).

    ``STATE_PREFIX`` isolates test runs that share one Redis.
    """
    env = dict(os.environ) if env is None else env
    prefix = env.get("STATE_PREFIX")
    prefix = f"{prefix}:" if prefix else DEFAULT_KEY_PREFIX
    redis_url = env.get("REDIS_URL")
    if redis_url:
        return RedisStore(redis_url, prefix=prefix)
    postgres_url = env.get("POSTGRES_URL")
    if postgres_url:
        from mcp_resilient.server import PostgresStore

        return PostgresStore(postgres_url, prefix=prefix)
    return SQLiteStore(env.get("STATE_DB") or default_sqlite_path(), prefix=prefix)


class ExampleState:
    """The example's tools over the kit's store: sessions via ``SessionState``, the rest here."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _exec_key(self, call_id: str) -> str:
        return f"{self.store.prefix}example:executions:{call_id}"

    def _gate_key(self, name: str) -> str:
        return f"{self.store.prefix}example:gate:{name}"

    async def record_execution(self, session: SessionState, call_id: str) -> None:
        """Count one execution of ``call_id`` (shared by every instance).

        Written through the session's store, so in a transactional tool it commits with
        the tool's state writes (it counts applied runs); elsewhere it is written at once
        (it counts runs).
        """
        await session.store.incr(self._exec_key(call_id), 1, ttl=None, touch=None)

    async def increment(self, session: SessionState, by: int, call_id: str | None) -> int:
        """Add ``by`` to the counter; with a call id, count one execution of it first.

        The record comes first: a process killed between the two steps of a tool that is
        not transactional shows a run that did not reach the counter, never a counter
        change with no run recorded.
        """
        if call_id is not None:
            await self.record_execution(session, call_id)
        return await session.incr(COUNTER, by)

    @staticmethod
    async def get_counter(session: SessionState) -> int:
        value = await session.get(COUNTER)
        return int(value) if value is not None else 0

    @staticmethod
    async def set_counter(session: SessionState, value: int) -> None:
        await session.set(COUNTER, str(value))

    @staticmethod
    async def add_note(session: SessionState, text: str) -> int:
        return await session.append(NOTES, text)

    @staticmethod
    async def list_notes(session: SessionState) -> list[str]:
        return await session.get_list(NOTES)

    async def snapshot(self, session: SessionState) -> SessionSnapshot:
        return SessionSnapshot(await self.get_counter(session), await self.list_notes(session))

    async def executions(self, call_id: str) -> int:
        """How many times a call id has run, on any instance."""
        value = await self.store.get(self._exec_key(call_id))
        return int(value) if value is not None else 0

    async def open_gate(self, name: str) -> None:
        """Open a named gate (tests use gates to order events across processes)."""
        await self.store.set(self._gate_key(name), "1", ttl=3600, touch=None)

    async def gate_is_open(self, name: str) -> bool:
        return await self.store.get(self._gate_key(name)) is not None

    async def mark_waiting(self, name: str, instance: str) -> None:
        """Record that a call reached the gate, and on which instance (so a demo or a test
        knows when and where to strike)."""
        await self.store.set(self._gate_key(name) + ":waiting", instance, ttl=3600, touch=None)

    async def waiting_on(self, name: str) -> str | None:
        """The instance where a call waits at this gate (None: nobody reached it yet)."""
        return await self.store.get(self._gate_key(name) + ":waiting")
