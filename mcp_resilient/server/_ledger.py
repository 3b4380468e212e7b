"""The idempotency ledger: one run per key, and every duplicate gets that run's outcome.

The first ``tools/call`` under a key claims a record in the store ("started", with a
lease the owner keeps renewing), runs the tool and stores its outcome. A duplicate that
arrives while the owner runs waits (bounded) for the outcome; one that arrives later
gets it at once; one whose owner died (lease ran out, no outcome) gets the distinct
"started, never finished" error, because re-running could do the work twice.
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

DEFAULT_LEASE = 10.0
"""Seconds an owner's claim lives without renewal (renewed every third of it)."""
DEFAULT_RESULT_TTL = 24 * 3600.0
"""Seconds a finished (or abandoned) record is kept: the window for re-sends."""
DEFAULT_WAIT = 30.0
"""Seconds a duplicate waits for a running first call before answering "in progress"."""
_POLL = 0.05
_RELEASE_TIMEOUT = 2.0
_MAX_RECLAIMS = 3


def short_hash(text: str) -> str:
    """What logs name a ledger record by: a record key holds the idempotency key, which on
    a server without auth is the only secret guarding the call's outcome."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class LedgerError(MCPError):
    """A JSON-RPC error of the exactly-once extension (codes in ``mcp_resilient._classify``)."""


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

    async def run(
        self, scope: str, key: str, fp: str, call: Callable[[], Awaitable[str]]
    ) -> tuple[str, bool]:
        """Run ``call`` once under ``key``; the encoded outcome and whether this call ran it."""
        record_key = self.record_key(scope, key)
        for _ in range(_MAX_RECLAIMS):
            owner = uuid.uuid4().hex
            try:
                existing = await self.store.claim(
                    record_key, owner, fp, lease=self.lease, ttl=self.result_ttl
                )
            except StoreError as exc:
                raise self._unavailable(key, exc) from exc
            if existing is None:
                return await self._own(record_key, owner, call, key), True
            outcome = await self._follow(record_key, key, fp, existing)
            if outcome is not None:
                return outcome, False
            # The record expired while we looked: claim it afresh.
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
        self, record_key: str, owner: str, call: Callable[[], Awaitable[str]], key: str = ""
    ) -> str:
        # A store that can (PostgreSQL) runs the tool and the outcome in one transaction.
        unit = getattr(self.store, "ledger_unit", None)
        if unit is None:
            return await self._run_owned(record_key, owner, call, key, joined=False)
        try:
            async with unit(record_key):
                return await self._run_owned(record_key, owner, call, key, joined=True)
        except StoreError as exc:  # the commit of the tool's writes and outcome failed
            raise self._not_durable(record_key, key, exc) from exc

    def _not_durable(self, record_key: str, key: str, exc: StoreError) -> LedgerError:
        """The tool ran but its outcome is not safely stored: no answer it could not back."""
        logger.warning("outcome of %s not stored durably: %s", record_key, exc)
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
        call: Callable[[], Awaitable[str]],
        key: str,
        *,
        joined: bool,
    ) -> str:
        encoded: str | None = None
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat, record_key, owner)
            try:
                encoded = await call()
            except BaseException as exc:  # cancellation too: the lease must end either way
                error = exc
            tg.cancel_scope.cancel()
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

    async def _follow(self, record_key: str, key: str, fp: str, record: LedgerRecord) -> str | None:
        """A duplicate: the stored outcome, waiting (bounded) while the owner runs."""
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
