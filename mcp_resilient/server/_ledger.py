"""The idempotency ledger: one run per key, and every duplicate gets that run's outcome.

The first ``tools/call`` under a key claims a record in the store ("started", with a
lease the owner keeps renewing), runs the tool and stores its outcome. A duplicate that
arrives while the owner runs waits (bounded) for the outcome; one that arrives later
gets it at once; one whose owner died (lease ran out, no outcome) gets the distinct
"started, never finished" error, because re-running could do the work twice.

A transactional run (``_tx.py``) is claimed as such and commits its writes together with
its outcome, so a record still running after its owner's lease ended has done nothing:
the duplicate takes it over and runs the tool afresh instead of answering with an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError

from .._classify import (
    LEDGER_CONFLICT,
    LEDGER_IN_PROGRESS,
    LEDGER_KEY_CONFLICT,
    LEDGER_STARTED_NOT_FINISHED,
    LEDGER_UNAVAILABLE,
)
from ._store import LedgerRecord, NotReplicatedError, Store, StoreError

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_RESULT_TTL",
    "DEFAULT_WAIT",
    "Ledger",
    "LedgerError",
    "Unrecorded",
]

logger = logging.getLogger("mcp_resilient.server")

DEFAULT_LEASE = 3.0
"""Seconds an owner's claim lives without renewal (renewed every third of it: each second).

Short, so a re-send learns within a few seconds that the replica running the first try
died (SIGKILL): "started, never finished" comes once the lease runs out."""
DEFAULT_RESULT_TTL = 24 * 3600.0
"""Seconds a finished (or abandoned) record is kept: the window for re-sends."""
DEFAULT_WAIT = 30.0
"""Seconds a duplicate waits for a running first call before answering "in progress"."""
_POLL = 0.05
_RELEASE_TIMEOUT = 2.0
_MAX_RECLAIMS = 3
TX_RECORD_INFIX = "__idem__:"
"""Marks a transactional call's ledger record among its state's keys."""


def short_hash(text: str) -> str:
    """What logs name a ledger record by: a record key holds the idempotency key, which on
    a server without auth is the only secret guarding the call's outcome."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class LedgerError(MCPError):
    """A JSON-RPC error of the exactly-once extension (codes in ``mcp_resilient._classify``)."""


class LostClaim(Exception):
    """A transactional run found its record taken over at commit: it wrote nothing."""


class ConflictsExhausted(Exception):
    """A transactional run kept meeting concurrent writes: it wrote nothing."""


def conflict_error(key: str | None, attempts: int) -> LedgerError:
    """The answer when every attempt of a transactional run met a conflicting write."""
    data: dict[str, Any] = {"retryAfterMs": 100}
    if key is not None:
        data["idempotencyKey"] = key
    return LedgerError(
        LEDGER_CONFLICT,
        f"the call's state changed under it {attempts} times in a row; nothing was applied."
        " Send it again (with the same idempotency key)",
        data,
    )


#: What a transactional run is given: the ledger record it claimed and its owner id
#: (or None, None for an unkeyed call); it returns the encoded outcome once committed.
TransactionalCall = Callable[[str | None, str | None], Awaitable[str]]


class Unrecorded(Exception):
    """Raised by a run whose answer is not the call's outcome, so the ledger drops the
    record instead of storing it and the next leg or re-send under the key runs:

    - a 2026-07-28 ``input_required`` round (the call goes on in a later leg);
    - a refusal before the tool body ran (unknown tool, invalid arguments, not
      authorized): nothing ran, and a re-send meets the same checks again.

    ``value`` is handed back to the caller.
    """

    def __init__(self, value: Any) -> None:
        super().__init__("an answer that is not the call's outcome")
        self.value = value


def fingerprint(name: str, arguments: Any) -> str:
    """What a key is bound to: the tool and its arguments (a key reused for another call
    is a conflict, not a cache hit)."""
    text = json.dumps([name, arguments], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Ledger:
    """Exactly-once runs over a ``Store``; independent of FastMCP (the middleware adapts it)."""

    def __init__(
        self,
        store: Store,
        *,
        lease: float = DEFAULT_LEASE,
        result_ttl: float = DEFAULT_RESULT_TTL,
        wait: float = DEFAULT_WAIT,
        poll_interval: float = _POLL,
    ) -> None:
        if lease <= 0 or result_ttl <= 0 or wait < 0 or poll_interval <= 0:
            raise ValueError("lease, result_ttl and poll_interval must be > 0, wait >= 0")
        self.store = store
        self.lease = lease
        self.result_ttl = result_ttl
        self.wait = wait
        self.poll_interval = poll_interval

    def record_key(self, scope: str, key: str) -> str:
        """``{prefix}idem:{hash of scope}:{key}``: a scope's keys never meet another's."""
        scope_hash = hashlib.sha256(scope.encode()).hexdigest()[:32]
        return f"{self.store.prefix}idem:{scope_hash}:{key}"

    def transactional_record_key(self, state_prefix: str | None, scope: str, key: str) -> str:
        """Where a transactional call's record lives: with the state it commits into
        (``{state prefix}__idem__:{hash of scope}:{key}``), so one commit touches the keys of
        one state only and the record moves with the state when a session resumes.
        Without a state: the usual place."""
        if state_prefix is None:
            return self.record_key(scope, key)
        scope_hash = hashlib.sha256(scope.encode()).hexdigest()[:32]
        return f"{state_prefix}{TX_RECORD_INFIX}{scope_hash}:{key}"

    async def run(
        self, scope: str, key: str, fp: str, call: Callable[[], Awaitable[str]]
    ) -> tuple[str, bool]:
        """Run ``call`` once under ``key``; the encoded outcome and whether this call ran it."""

        async def own(_record: str | None, _owner: str | None) -> str:
            return await call()

        return await self._run(self.record_key(scope, key), key, fp, own, transactional=False)

    async def run_transactional(
        self, record_key: str, key: str, fp: str, call: TransactionalCall
    ) -> tuple[str, bool]:
        """Run a transactional ``call`` once under ``key``: it commits its writes with the
        outcome itself (``Store.commit``); a dead owner's record is taken over and run
        afresh. The encoded outcome and whether this call ran it."""
        return await self._run(record_key, key, fp, call, transactional=True)

    async def _run(
        self, record_key: str, key: str, fp: str, call: TransactionalCall, *, transactional: bool
    ) -> tuple[str, bool]:
        for _ in range(_MAX_RECLAIMS):
            owner = uuid.uuid4().hex
            try:
                existing = await self.store.claim(
                    record_key,
                    owner,
                    fp,
                    lease=self.lease,
                    ttl=self.result_ttl,
                    **({"transactional": True} if transactional else {}),
                )
            except StoreError as exc:
                raise self._unavailable(key, exc) from exc
            if existing is None:
                try:
                    return await self._own(record_key, owner, call, transactional, key), True
                except LostClaim:
                    # Our lease ended and another run took the record over: follow it.
                    existing = LedgerRecord("running", fp, self.lease, transactional=True)
            outcome = await self._follow(record_key, key, fp, existing, transactional)
            if outcome is not None:
                return outcome, False
            # The record expired while we looked, or its dead owner's run left no trace:
            # claim it afresh.
        raise self._unavailable(key, StoreError("the record kept vanishing"))

    def _unavailable(self, key: str, exc: Exception) -> LedgerError:
        # The detail (which store, what failed) goes to the log, never to the caller.
        logger.warning("idempotency ledger unavailable (key #%s): %s", short_hash(key), exc)
        return LedgerError(
            LEDGER_UNAVAILABLE,
            f"idempotency ledger unavailable ({self.store.name} store did not answer),"
            " the call was not run",
            {"idempotencyKey": key},
        )

    async def _own(
        self,
        record_key: str,
        owner: str,
        call: TransactionalCall,
        transactional: bool,
        key: str = "",
    ) -> str:
        # A store that can (PostgreSQL) runs a plain tool, its writes and the outcome in
        # one database transaction, which the tool may share (``PostgresStore.transaction``).
        # A transactional run commits its staged writes itself (``Store.commit``).
        unit = getattr(self.store, "ledger_unit", None)
        if unit is None or transactional:
            return await self._run_owned(record_key, owner, call, transactional, key, False)
        try:
            async with unit(record_key):
                return await self._run_owned(record_key, owner, call, transactional, key, True)
        except StoreError as exc:  # the commit of the tool's writes and outcome failed
            raise self._not_durable(record_key, key, exc) from exc

    def _not_durable(self, record_key: str, key: str, exc: StoreError) -> LedgerError:
        """The tool ran but its outcome is not safely stored: no answer it could not back."""
        logger.warning("outcome of #%s not stored durably: %s", short_hash(record_key), exc)
        why = (
            "no replica of its store confirmed the outcome in time"
            if isinstance(exc, NotReplicatedError)
            else "its store did not commit the outcome"
        )
        return LedgerError(
            LEDGER_STARTED_NOT_FINISHED,
            f"the call ran, but {why}, so the server cannot vouch for it; it was not run again",
            {"idempotencyKey": key},
        )

    async def _run_owned(
        self,
        record_key: str,
        owner: str,
        call: TransactionalCall,
        transactional: bool,
        key: str,
        joined: bool,
    ) -> str:
        encoded: str | None = None
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat, record_key, owner)
            try:
                encoded = await call(record_key, owner)
            except BaseException as exc:  # cancellation too: the lease must end either way
                error = exc
            tg.cancel_scope.cancel()
        if isinstance(error, LostClaim):
            raise error
        if isinstance(error, NotReplicatedError) and transactional:
            # The commit reached the primary, no replica confirmed it: not an answer.
            raise self._not_durable(record_key, key, error)
        if isinstance(error, Unrecorded):
            with anyio.CancelScope(shield=True), anyio.move_on_after(_RELEASE_TIMEOUT):
                try:
                    await self.store.forget(record_key, owner)
                except StoreError as exc:
                    logger.warning(
                        "could not drop the round of #%s: %s", short_hash(record_key), exc
                    )
            raise error
        if error is not None or encoded is None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_RELEASE_TIMEOUT):
                try:
                    await self.store.release(record_key, owner)
                except StoreError as exc:
                    logger.warning(
                        "could not end the lease of #%s: %s", short_hash(record_key), exc
                    )
            raise error if error is not None else RuntimeError("no outcome")
        if transactional:
            return encoded  # committed with its writes
        try:
            if not await self.store.complete(record_key, owner, encoded, ttl=self.result_ttl):
                logger.warning(
                    "ledger record #%s was no longer ours at completion", short_hash(record_key)
                )
        except StoreError as exc:
            if joined or isinstance(exc, NotReplicatedError):
                # The outcome (and with it maybe the tool's writes) may not survive: an
                # answer now would be an acknowledgement the store cannot back.
                raise self._not_durable(record_key, key, exc) from exc
            # The tool ran; the caller still gets its answer. Duplicates will be told it
            # started and never finished, which is the truth as far as the ledger knows.
            logger.warning("could not store the outcome of #%s: %s", short_hash(record_key), exc)
        return encoded

    async def _heartbeat(self, record_key: str, owner: str) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                if not await self.store.renew(record_key, owner, lease=self.lease):
                    logger.warning("lost the lease of #%s", short_hash(record_key))
                    return
            except StoreError as exc:
                logger.warning("could not renew the lease of #%s: %s", short_hash(record_key), exc)

    async def _follow(
        self, record_key: str, key: str, fp: str, record: LedgerRecord, transactional: bool
    ) -> str | None:
        """A duplicate: the stored outcome, waiting (bounded) while the owner runs.

        None: claim again (the record is gone, or it is a transactional run whose owner
        died before committing, so nothing happened and the tool may run afresh).
        """
        deadline = anyio.current_time() + self.wait
        current: LedgerRecord | None = record
        while True:
            if current is None:
                return None
            if current.fingerprint != fp:
                raise LedgerError(
                    LEDGER_KEY_CONFLICT,
                    "idempotency key already used for a different tool call",
                    {"idempotencyKey": key},
                )
            if current.state == "done" and current.outcome is not None:
                return current.outcome
            if current.lease_left <= 0 and transactional and current.transactional:
                return None
            if current.lease_left <= 0:
                raise LedgerError(
                    LEDGER_STARTED_NOT_FINISHED,
                    "the server confirms a call with this idempotency key started and never"
                    " finished (its runner stopped before recording a result); it was not run"
                    " again",
                    {"idempotencyKey": key},
                )
            if anyio.current_time() >= deadline:
                raise LedgerError(
                    LEDGER_IN_PROGRESS,
                    f"a call with this idempotency key is still running after {self.wait:g} s;"
                    " send it again later with the same key",
                    {"idempotencyKey": key, "retryAfterMs": int(self.lease * 1000)},
                )
            await anyio.sleep(self.poll_interval)
            try:
                current = await self.store.read(record_key)
            except StoreError as exc:
                raise self._unavailable(key, exc) from exc
