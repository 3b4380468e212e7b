"""``session_state``: state that follows one client across its calls, in both eras.

Handshake era (2025-11-25): keyed on the MCP session (``mcp:session:{id}:``); a client
that lost its session carries the state over with ``resume_session``. 2026-07-28 era:
there is no session (FastMCP gives every request a fresh ``ctx.session_id``), so the
state is keyed on the state id the client sends in ``params._meta``
(``io.github.mcp-resilient/stateId``, ``mcp:state:{hash}:``). Either way the first write
binds the state to the caller's principal, and every read and write checks it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from fastmcp import Context
from fastmcp.exceptions import ToolError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .._classify import STATE_ID_META_KEY
from ._store import Store, StoreError

__all__ = ["DEFAULT_SESSION_TTL", "SessionState", "StateKey", "state_key"]

logger = logging.getLogger("mcp_resilient.server")

DEFAULT_SESSION_TTL = 24 * 3600.0
"""Seconds a session's state lives after its last write (sliding)."""
OWNER_KEY = "__owner__"
MAX_STATE_ID_LENGTH = 255
_OWNERS_CACHED = 10_000

#: An owner check this process made is trusted for this share of the TTL (a write
#: slides the marker's TTL, so it cannot expire sooner).
_TRUST_SHARE = 0.5

MISSING_STATE_ID = (
    f"this tool keeps state across calls, and this request carries no state id: in the"
    f" 2026-07-28 protocol every request is on its own. Send one in params._meta"
    f' ("{STATE_ID_META_KEY}": "<a stable id for this conversation>"; mcp-resilient\'s'
    f" ResilientClient does this by itself), or use the handshake era (2025-11-25)"
)
REFUSED = "this state belongs to another principal; it was not read or changed"


def scope_hash(principal: str) -> str:
    """What the owner marker holds: the principal, hashed (the store never sees who)."""
    return hashlib.sha256(principal.encode()).hexdigest()[:32]


StateKey = tuple[Literal["session", "state"], str]
"""Which state a request uses: its session (handshake era) or its state id (2026-07-28)."""


def _meta_of(ctx: Context) -> Mapping[str, Any] | None:
    request_context = ctx.request_context
    meta = request_context.meta if request_context is not None else None
    if meta is None:
        return None
    if isinstance(meta, Mapping):
        return meta
    dumped = getattr(meta, "model_dump", None)
    return dumped() if callable(dumped) else None


def is_modern(ctx: Context) -> bool:
    """Whether this request speaks the 2026-07-28 era (no session to key state on)."""
    request_context = ctx.request_context
    return request_context is not None and (
        request_context.protocol_version in MODERN_PROTOCOL_VERSIONS
    )


def state_key(ctx: Context) -> StateKey | str:
    """The request's state: ``("session", id)`` or ``("state", id)``; else why there is none."""
    if not is_modern(ctx):
        return "session", ctx.session_id
    meta = _meta_of(ctx)
    value = meta.get(STATE_ID_META_KEY) if meta else None
    if value is None:
        return MISSING_STATE_ID
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_STATE_ID_LENGTH
        or not all("\x21" <= ch <= "\x7e" for ch in value)
    ):
        return f"{STATE_ID_META_KEY} must be 1 to {MAX_STATE_ID_LENGTH} visible ASCII characters"
    return "state", value


def _prefix(store: Store, key: StateKey) -> str:
    kind, ident = key
    if kind == "session":
        return f"{store.prefix}session:{ident}:"
    # Hashed: a caller-chosen id may hold ':' and must never be a prefix of another's.
    return f"{store.prefix}state:{hashlib.sha256(ident.encode()).hexdigest()[:40]}:"


class SessionState:
    """One client's state in the store, for tool authors (``session_state(ctx)``).

    Every write slides the TTL of all the state's keys, so state in use never loses a
    part. The first write binds the state to the caller's principal (an owner marker);
    every read and write checks it, and another principal gets a ``ToolError``.
    Without a state id in the 2026-07-28 era every operation raises a ``ToolError`` that
    says how to send one, and nothing is written.
    """

    def __init__(
        self,
        store: Store,
        session_id: str,
        *,
        principal: str = "anonymous",
        ttl: float | None = DEFAULT_SESSION_TTL,
        kind: Literal["session", "state"] = "session",
        missing: str | None = None,
        _owned: dict[str, tuple[str, float]] | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        """The session id (handshake era) or the state id (2026-07-28) the state is under."""
        self.kind = kind
        self.principal = principal
        self.ttl = ttl
        self.prefix = _prefix(store, (kind, session_id))
        self._missing = missing
        self._owners = _owned if _owned is not None else {}

    async def _check(self, *, write: bool) -> bool:
        """Refuse another principal's state; bind ours on a write. False: no state yet."""
        if self._missing is not None:
            raise ToolError(self._missing)
        mine = scope_hash(self.principal)
        cached = self._owners.get(self.prefix)
        now = time.monotonic()
        if cached is not None and now < cached[1]:
            if cached[0] != mine:
                raise ToolError(REFUSED)
            return True
        owner: str | None
        try:
            if write:
                held = await self.store.set_if_absent(
                    self.prefix + OWNER_KEY, mine, ttl=self.ttl, touch=self.prefix
                )
                owner = held or mine
            else:
                owner = await self.store.get(self.prefix + OWNER_KEY)
        except StoreError as exc:
            raise _unavailable(exc) from exc
        if owner is None:
            return False
        if write:
            # The marker now lives at least the TTL: trust it for a share of that.
            trusted = now + (self.ttl * _TRUST_SHARE if self.ttl is not None else 3600.0)
            if len(self._owners) >= _OWNERS_CACHED:
                self._owners.clear()
            self._owners[self.prefix] = (owner, trusted)
        if owner != mine:
            raise ToolError(REFUSED)
        return True

    async def _do(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except StoreError as exc:
            raise _unavailable(exc) from exc

    async def get(self, key: str) -> str | None:
        if not await self._check(write=False):
            return None
        value: str | None = await self._do(self.store.get(self.prefix + key))
        return value

    async def set(self, key: str, value: str) -> None:
        await self._check(write=True)
        await self._do(self.store.set(self.prefix + key, value, ttl=self.ttl, touch=self.prefix))

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to an integer (0 when absent), atomically; the new value."""
        await self._check(write=True)
        return int(
            await self._do(self.store.incr(self.prefix + key, by, ttl=self.ttl, touch=self.prefix))
        )

    async def append(self, key: str, value: str) -> int:
        """Append to a list, atomically; its new length."""
        await self._check(write=True)
        return int(
            await self._do(
                self.store.append(self.prefix + key, value, ttl=self.ttl, touch=self.prefix)
            )
        )

    async def get_list(self, key: str) -> list[str]:
        if not await self._check(write=False):
            return []
        items: list[str] = await self._do(self.store.get_list(self.prefix + key))
        return items

    async def owner(self) -> str | None:
        """The hash of the principal that wrote this state (None: no state)."""
        value: str | None = await self._do(self.store.get(self.prefix + OWNER_KEY))
        return value

    async def take_over(self, old_session_id: str) -> bool:
        """Replace this state by a copy of session ``old_session_id``'s.

        Refused (``ToolError``) when either belongs to another principal. False when the
        old session has no state (expired, or never written).
        """
        await self._check(write=True)
        old = SessionState(self.store, old_session_id, principal=self.principal, ttl=self.ttl)
        owner = await old.owner()
        if owner is None:
            return False
        if owner != scope_hash(self.principal):
            raise ToolError("that session belongs to another principal; its state was not copied")
        await self._do(self.store.copy_prefix(old.prefix, self.prefix, ttl=self.ttl))
        self._owners.pop(self.prefix, None)  # the copy replaced our marker: check again
        await self._check(write=True)
        return True


def _unavailable(exc: StoreError) -> ToolError:
    """The tool's caller learns the state store is down, never where it lives."""
    logger.warning("session state store failed: %s", exc)
    return ToolError("the server's session state store is unavailable; try again shortly")
