"""The kit's store in PostgreSQL (psycopg 3 and its pool): state next to the server's own data.

Every operation is one short transaction on the database's clock (``now()``), so leases
never depend on the replicas' clocks. Inside a ledger run, the tool's writes (its session
state, and its own tables through ``PostgresStore.transaction()``) and the outcome commit
in one transaction: either all of it is there, or none of it.

The schema is created on first use (idempotent ``CREATE ... IF NOT EXISTS`` under an
advisory lock) and versioned in ``{table_prefix}schema_version``; see docs/stores.md.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from psycopg import AsyncConnection, sql
from psycopg import Error as PsycopgError
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ._store import Commit, CommitResult, LedgerRecord, StateValue, StoreError

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

SCHEMA_VERSION = 1
"""The schema this code writes; a newer one in the database is refused, an older migrated."""
#: Expired rows are deleted at most this often (seconds) by some claim; reads ignore them.
SWEEP_INTERVAL = 60.0
#: Advisory lock key held while creating or migrating the schema (any value unique to us).
_SCHEMA_LOCK = 0x6D6370_7265_73


@dataclass
class _Unit:
    """The transaction of one ledger run: the tool's writes and the outcome commit in it."""

    store: PostgresStore
    record: str
    conn: AsyncConnection[Any]


_unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar("mcp_pg_unit", default=None)


def _schema(prefix: str) -> list[sql.Composed]:
    kv, ledger, version = (
        sql.Identifier(prefix + name) for name in ("kv", "ledger", "schema_version")
    )
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(version),
        sql.SQL(
            'CREATE TABLE IF NOT EXISTS {} (key text COLLATE "C" PRIMARY KEY, value text,'
            " items text[], expires_at timestamptz)"
        ).format(kv),
        sql.SQL(
            'CREATE TABLE IF NOT EXISTS {} (key text COLLATE "C" PRIMARY KEY, state text NOT NULL,'
            " owner text NOT NULL, fingerprint text NOT NULL, lease_until timestamptz NOT NULL,"
            " outcome text, expires_at timestamptz NOT NULL, tx boolean NOT NULL DEFAULT false)"
        ).format(ledger),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at)").format(
            sql.Identifier(prefix + "kv_expires"), kv
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at)").format(
            sql.Identifier(prefix + "ledger_expires"), ledger
        ),
    ]


class PostgresStore:
    """The store in PostgreSQL. ``dsn`` is a libpq URL/DSN, or an ``AsyncConnectionPool``.

    Tables (``table_prefix`` ``mcp_`` by default): ``mcp_kv`` (session state: strings in
    ``value``, lists in ``items``), ``mcp_ledger`` (one row per idempotency record) and
    ``mcp_schema_version``. Keys sort bytewise (``COLLATE "C"``), so a session's keys are
    one range of the primary key.
    """

    name = "postgres"

    def __init__(
        self,
        dsn: str | AsyncConnectionPool[AsyncConnection[Any]],
        *,
        prefix: str = "mcp:",
        table_prefix: str = "mcp_",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
    ) -> None:
        self.prefix = prefix
        self.table_prefix = table_prefix
        self.timeout = timeout
        if isinstance(dsn, AsyncConnectionPool):
            self._pool, self._own_pool = dsn, False
        else:
            self._pool = AsyncConnectionPool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                open=False,
                kwargs={"connect_timeout": max(1, int(timeout)), "autocommit": True},
            )
            self._own_pool = True
        self._ready = False
        self._lock = anyio.Lock()
        self._last_sweep = 0.0
        kv, ledger = (sql.Identifier(table_prefix + n) for n in ("kv", "ledger"))
        self._kv, self._ledger = kv, ledger
        self._version_table = sql.Identifier(table_prefix + "schema_version")
        self._where = f"PostgreSQL store ({table_prefix}* tables)"

    # -- plumbing --------------------------------------------------------------------

    async def _open(self) -> None:
        async with self._lock:
            if self._ready:
                return
            if self._own_pool:
                await self._pool.open(wait=True, timeout=self.timeout)
            async with self._pool.connection(timeout=self.timeout) as conn, conn.transaction():
                await self._migrate(conn)
            self._ready = True

    async def _migrate(self, conn: AsyncConnection[Any]) -> None:
        """Create or upgrade the schema once, whichever replica gets there first."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _schema(self.table_prefix):
            await conn.execute(statement)
        row = await (
            await conn.execute(sql.SQL("SELECT max(version) FROM {}").format(self._version_table))
        ).fetchone()
        current = row[0] if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self._where}: the database has schema version {current}, this code knows"
                f" {SCHEMA_VERSION}; upgrade mcp-resilient on every replica"
            )
        # Migrations from ``current`` to SCHEMA_VERSION go here, one step per version.
        if current < SCHEMA_VERSION:
            await conn.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s) ON CONFLICT DO NOTHING").format(
                    self._version_table
                ),
                (SCHEMA_VERSION,),
            )

    @contextlib.asynccontextmanager
    async def _conn(self, *, join: bool) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in a transaction: the current ledger run's when ``join``, else a new one."""
        unit = _unit.get()
        if join and unit is not None and unit.store is self:
            yield unit.conn
            return
        if not self._ready:
            await self._open()
        async with self._pool.connection(timeout=self.timeout) as conn, conn.transaction():
            yield conn

    async def _run(
        self,
        what: str,
        query: sql.SQL | sql.Composed,
        params: Any,
        *,
        join: bool = True,
        fetch: bool = True,
    ) -> tuple[Any, ...] | None:
        try:
            async with self._conn(join=join) as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchone() if fetch and cursor.description else None
        except (PsycopgError, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self._where}: {what} failed: {exc}") from exc

    # -- for tools -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in a transaction for a tool's own tables.

        Inside a keyed call (the ledger runs the tool) it is the ledger's transaction: the
        rows commit together with the outcome, or not at all. Elsewhere a fresh one.
        """
        async with self._conn(join=True) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def ledger_unit(self, record: str) -> AsyncIterator[None]:
        """Run a ledger owner's tool and ``complete`` in one transaction (used by ``Ledger``)."""
        if not self._ready:
            await self._open()
        try:
            async with self._pool.connection(timeout=self.timeout) as conn, conn.transaction():
                # A transactional tool that meets a conflict runs again: its SQL goes back
                # to here first, so each attempt's rows are written once.
                await conn.execute("SAVEPOINT mcp_attempt")
                token = _unit.set(_Unit(self, record, conn))
                try:
                    yield
                finally:
                    _unit.reset(token)
        except (PsycopgError, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self._where}: commit of a ledger run failed: {exc}") from exc

    # -- key/value -------------------------------------------------------------------

    def _touch(self) -> sql.Composed:
        return sql.SQL(
            "UPDATE {} SET expires_at = now() + %s * interval '1 second'"
            " WHERE key >= %s AND key < %s || chr(1114111)"
            " AND (expires_at IS NULL OR expires_at > now())"  # never revive expired keys
        ).format(self._kv)

    async def _write(
        self, what: str, query: sql.Composed, params: Any, ttl: float | None, touch: str | None
    ) -> tuple[Any, ...] | None:
        try:
            async with self._conn(join=True) as conn:
                if touch is not None and ttl is not None:
                    # First: it locks the session's rows in key order, so two writers to
                    # one session never deadlock.
                    await conn.execute(self._touch(), (ttl, touch, touch))
                cursor = await conn.execute(query, params)
                return await cursor.fetchone() if cursor.description else None
        except (PsycopgError, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self._where}: {what} failed: {exc}") from exc

    @staticmethod
    def _expires() -> str:
        return (
            "CASE WHEN %(ttl)s::float8 IS NULL THEN NULL"
            " ELSE now() + %(ttl)s * interval '1 second' END"
        )

    async def ping(self) -> None:
        await self._run("ping", sql.SQL("SELECT 1"), (), join=False)

    async def get(self, key: str) -> str | None:
        row = await self._run(
            "get",
            sql.SQL(
                "SELECT value FROM {} WHERE key = %s AND (expires_at IS NULL OR expires_at > now())"
            ).format(self._kv),
            (key,),
        )
        return None if row is None or row[0] is None else str(row[0])

    async def set(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> None:
        query = sql.SQL(
            "INSERT INTO {} (key, value, items, expires_at) VALUES (%(key)s, %(value)s, NULL, "
            + self._expires()
            + ") ON CONFLICT (key) DO UPDATE SET value = excluded.value, items = NULL,"
            " expires_at = excluded.expires_at"
        ).format(self._kv)
        await self._write("set", query, {"key": key, "value": value, "ttl": ttl}, ttl, touch)

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None, touch: str | None
    ) -> str | None:
        # An expired row counts as absent; the row lock settles two replicas racing.
        query = sql.SQL(
            "INSERT INTO {kv} AS t (key, value, items, expires_at) VALUES (%(key)s, %(value)s,"
            " NULL, " + self._expires() + ") ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, items = NULL, expires_at = excluded.expires_at"
            " WHERE t.expires_at IS NOT NULL AND t.expires_at <= now() RETURNING 1"
        ).format(kv=self._kv)
        params = {"key": key, "value": value, "ttl": ttl}
        try:
            async with self._conn(join=True) as conn:
                if touch is not None and ttl is not None:
                    await conn.execute(self._touch(), (ttl, touch, touch))
                if await (await conn.execute(query, params)).fetchone() is not None:
                    return None
                row = await (
                    await conn.execute(
                        sql.SQL("SELECT value FROM {} WHERE key = %s").format(self._kv), (key,)
                    )
                ).fetchone()
                return None if row is None else str(row[0])
        except (PsycopgError, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self._where}: set-if-absent failed: {exc}") from exc

    async def incr(self, key: str, by: int, *, ttl: float | None, touch: str | None) -> int:
        query = sql.SQL(
            "INSERT INTO {kv} AS t (key, value, items, expires_at) VALUES (%(key)s, %(by)s::text,"
            " NULL, " + self._expires() + ") ON CONFLICT (key) DO UPDATE SET value ="
            " (CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <= now() THEN 0"
            " ELSE coalesce(t.value, '0')::bigint END + %(by)s)::text,"
            " items = NULL, expires_at = excluded.expires_at RETURNING value"
        ).format(kv=self._kv)
        row = await self._write("incr", query, {"key": key, "by": by, "ttl": ttl}, ttl, touch)
        assert row is not None
        return int(row[0])

    async def append(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> int:
        query = sql.SQL(
            "INSERT INTO {kv} AS t (key, value, items, expires_at) VALUES (%(key)s, NULL,"
            " ARRAY[%(value)s::text], " + self._expires() + ") ON CONFLICT (key) DO UPDATE SET"
            " items = CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <= now()"
            " THEN ARRAY[%(value)s::text] ELSE coalesce(t.items, ARRAY[]::text[]) || %(value)s::text END,"
            " value = NULL, expires_at = excluded.expires_at RETURNING cardinality(items)"
        ).format(kv=self._kv)
        params = {"key": key, "value": value, "ttl": ttl}
        row = await self._write("append", query, params, ttl, touch)
        assert row is not None
        return int(row[0])

    async def get_list(self, key: str) -> list[str]:
        row = await self._run(
            "get_list",
            sql.SQL(
                "SELECT items FROM {} WHERE key = %s AND (expires_at IS NULL OR expires_at > now())"
            ).format(self._kv),
            (key,),
        )
        return [] if row is None or row[0] is None else [str(item) for item in row[0]]

    async def delete(self, key: str) -> None:
        await self._run(
            "delete",
            sql.SQL("DELETE FROM {} WHERE key = %s").format(self._kv),
            (key,),
            fetch=False,
        )

    async def copy_prefix(self, old: str, new: str, *, ttl: float | None) -> int:
        try:
            async with self._conn(join=True) as conn:
                await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE key >= %s AND key < %s || chr(1114111)").format(
                        self._kv
                    ),
                    (new, new),
                )
                cursor = await conn.execute(
                    sql.SQL(
                        "INSERT INTO {kv} (key, value, items, expires_at)"
                        " SELECT %(new)s || substr(key, length(%(old)s) + 1), value, items, "
                        + self._expires()
                        + " FROM {kv} WHERE key >= %(old)s AND key < %(old)s || chr(1114111)"
                        " AND (expires_at IS NULL OR expires_at > now())"
                    ).format(kv=self._kv),
                    {"new": new, "old": old, "ttl": ttl},
                )
                copied = int(cursor.rowcount)
                # Transactional records committed with this state travel with it.
                await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE key >= %s AND key < %s || chr(1114111)").format(
                        self._ledger
                    ),
                    (new, new),
                )
                await conn.execute(
                    sql.SQL(
                        "INSERT INTO {t} SELECT %(new)s || substr(key, length(%(old)s) + 1),"
                        " state, owner, fingerprint, lease_until, outcome, expires_at, tx"
                        " FROM {t} WHERE key >= %(old)s AND key < %(old)s || chr(1114111)"
                        " AND state = 'done' AND expires_at > now()"
                    ).format(t=self._ledger),
                    {"new": new, "old": old},
                )
                return copied
        except (PsycopgError, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self._where}: copy failed: {exc}") from exc

    # -- the ledger ------------------------------------------------------------------

    _RECORD = "state, fingerprint, extract(epoch FROM lease_until - now()), outcome, tx"

    @staticmethod
    def _record(row: tuple[Any, ...] | None) -> LedgerRecord | None:
        if row is None:
            return None
        state, fingerprint, lease_left, outcome, tx = row
        return LedgerRecord(
            state="done" if state == "done" else "running",
            fingerprint=str(fingerprint),
            lease_left=float(lease_left),
            outcome=None if outcome is None else str(outcome),
            transactional=bool(tx),
        )

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
        # A live record wins; an expired one is replaced, and so is a transactional run
        # whose owner died before committing (for a transactional claimant, same call).
        query = sql.SQL(
            "INSERT INTO {t} AS r VALUES (%(key)s, 'running', %(owner)s, %(fp)s,"
            " now() + %(lease)s * interval '1 second', NULL,"
            " now() + greatest(%(ttl)s, %(lease)s) * interval '1 second', %(tx)s)"
            " ON CONFLICT (key) DO UPDATE SET state = excluded.state, owner = excluded.owner,"
            " fingerprint = excluded.fingerprint, lease_until = excluded.lease_until,"
            " outcome = NULL, expires_at = excluded.expires_at, tx = excluded.tx"
            " WHERE r.expires_at <= now() OR (%(tx)s AND r.tx AND r.state = 'running'"
            " AND r.fingerprint = %(fp)s AND r.lease_until <= now())"
            " RETURNING owner"
        ).format(t=self._ledger)
        params = {
            "key": key,
            "owner": owner,
            "fp": fingerprint,
            "lease": lease,
            "ttl": ttl,
            "tx": transactional,
        }
        try:
            await self._maybe_sweep()
            async with self._conn(join=False) as conn:
                row = await (await conn.execute(query, params)).fetchone()
                if row is not None:
                    return None
                existing = await (
                    await conn.execute(
                        sql.SQL(f"SELECT {self._RECORD} FROM {{}} WHERE key = %s").format(
                            self._ledger
                        ),
                        (key,),
                    )
                ).fetchone()
                return self._record(existing)
        except (PsycopgError, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self._where}: claim failed: {exc}") from exc

    async def read(self, key: str) -> LedgerRecord | None:
        row = await self._run(
            "read",
            sql.SQL(
                f"SELECT {self._RECORD} FROM {{}} WHERE key = %s AND expires_at > now()"
            ).format(self._ledger),
            (key,),
            join=False,
        )
        return self._record(row)

    async def renew(self, key: str, owner: str, *, lease: float) -> bool:
        row = await self._run(
            "renew",
            sql.SQL(
                "UPDATE {} SET lease_until = now() + %(lease)s * interval '1 second',"
                " expires_at = greatest(expires_at, now() + %(lease)s * interval '1 second')"
                " WHERE key = %(key)s AND owner = %(owner)s AND state = 'running' RETURNING 1"
            ).format(self._ledger),
            {"lease": lease, "key": key, "owner": owner},
            join=False,
        )
        return row is not None

    async def release(self, key: str, owner: str) -> None:
        await self._run(
            "release",
            sql.SQL(
                "UPDATE {} SET lease_until = now() WHERE key = %s AND owner = %s"
                " AND state = 'running'"
            ).format(self._ledger),
            (key, owner),
            join=False,
            fetch=False,
        )

    async def complete(self, key: str, owner: str, outcome: str, *, ttl: float) -> bool:
        row = await self._run(
            "complete",
            sql.SQL(
                "UPDATE {} SET state = 'done', outcome = %(outcome)s,"
                " expires_at = now() + %(ttl)s * interval '1 second'"
                " WHERE key = %(key)s AND owner = %(owner)s RETURNING 1"
            ).format(self._ledger),
            {"outcome": outcome, "ttl": ttl, "key": key, "owner": owner},
            join=True,
        )
        return row is not None

    async def _maybe_sweep(self) -> None:
        now = anyio.current_time()
        if now - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = now
            await self.sweep()

    async def commit(self, commit: Commit) -> CommitResult:
        """One database transaction (the ledger run's, when there is one): check the
        record and every expected value under row locks, then write, slide, complete."""
        try:
            async with self._conn(join=True) as conn:
                result = await self._commit(conn, commit)
                unit = _unit.get()
                if result != "committed" and unit is not None and unit.conn is conn:
                    # Undo this attempt's own SQL too: the tool runs again (or gives up).
                    await conn.execute("ROLLBACK TO SAVEPOINT mcp_attempt")
                return result
        except (PsycopgError, PoolTimeout, OSError) as exc:
            raise StoreError(f"{self._where}: commit failed: {exc}") from exc

    async def _commit(self, conn: AsyncConnection[Any], commit: Commit) -> CommitResult:
        if commit.record is not None:
            row = await (
                await conn.execute(
                    sql.SQL("SELECT owner, state FROM {} WHERE key = %s FOR UPDATE").format(
                        self._ledger
                    ),
                    (commit.record,),
                )
            ).fetchone()
            if row is None or row[0] != commit.owner or row[1] != "running":
                return "lost"
        # Row locks cannot guard a key that does not exist yet: one transaction-scoped
        # advisory lock per key, taken in key order (no deadlock between commits).
        for key in sorted({*commit.expect, *commit.writes}):
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (key,))
        for key, expected in commit.expect.items():
            row = await (
                await conn.execute(
                    sql.SQL(
                        "SELECT value, items FROM {} WHERE key = %s"
                        " AND (expires_at IS NULL OR expires_at > now()) FOR UPDATE"
                    ).format(self._kv),
                    (key,),
                )
            ).fetchone()
            if not _matches(row, expected):
                return "conflict"
        touch = commit.touch
        if touch is not None and commit.ttl is not None and commit.writes:
            await conn.execute(self._touch(), (commit.ttl, touch, touch))
        for key, value in commit.writes.items():
            if value is None:
                await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE key = %s").format(self._kv), (key,)
                )
                continue
            under = touch is not None and key.startswith(touch)
            params = {
                "key": key,
                "value": value if isinstance(value, str) else None,
                "items": None if isinstance(value, str) else list(value),
                "ttl": commit.ttl if under else None,
            }
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (key, value, items, expires_at) VALUES (%(key)s, %(value)s,"
                    " %(items)s, " + self._expires() + ") ON CONFLICT (key) DO UPDATE SET"
                    " value = excluded.value, items = excluded.items,"
                    " expires_at = excluded.expires_at"
                ).format(self._kv),
                params,
            )
        if commit.record is not None:
            await conn.execute(
                sql.SQL(
                    "UPDATE {} SET state = 'done', outcome = %s,"
                    " expires_at = now() + %s * interval '1 second' WHERE key = %s"
                ).format(self._ledger),
                (commit.outcome, commit.record_ttl, commit.record),
            )
        return "committed"

    async def forget(self, key: str, owner: str) -> bool:
        row = await self._run(
            "forget",
            sql.SQL(
                "DELETE FROM {} WHERE key = %s AND owner = %s AND state = 'running' RETURNING 1"
            ).format(self._ledger),
            (key, owner),
            join=False,  # the ledger run's transaction is about to roll back
        )
        return row is not None

    async def sweep(self) -> int:
        """Delete expired rows (run it now and then, e.g. from a cron job); how many."""
        total = 0
        for table in (self._kv, self._ledger):
            try:
                async with self._conn(join=False) as conn:
                    cursor = await conn.execute(
                        sql.SQL("DELETE FROM {} WHERE expires_at <= now()").format(table)
                    )
                    total += max(0, cursor.rowcount)
            except (PsycopgError, PoolTimeout, OSError) as exc:
                raise StoreError(f"{self._where}: sweep failed: {exc}") from exc
        return total

    async def close(self) -> None:
        if self._own_pool:
            await self._pool.close()


def _matches(row: tuple[Any, ...] | None, expected: StateValue) -> bool:
    """Whether a kv row (value, items) still holds what a transactional run read."""
    if expected is None:
        return row is None
    if isinstance(expected, str):
        return row is not None and row[0] == expected and row[1] is None
    items = [] if row is None else row[1]
    if row is not None and items is None:
        return False
    return list(items or []) == list(expected)
