"""Which era to speak with an endpoint: pinned, or ``auto`` (probe, fall back, remember).

``auto`` follows the 2026-07-28 backward-compatibility rule for HTTP: try a modern request
(``server/discover``); a recognised modern error means a modern server (retry with a
version both sides speak), anything else a handshake-era server (fall back to
``initialize``). The answer is remembered per endpoint URL, and forgotten when a server
later answers as if it changed eras (an upgraded or downgraded replica behind the same
URL), so the next connection probes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import mcp_types

from .._exchange import Session
from ..errors import HTTPStatusError
from ._base import Era
from ._errors import modern_error_code
from ._handshake import HANDSHAKE_VERSIONS, HandshakeEra
from ._stateless import (
    STATELESS_VERSIONS,
    LegacyServerError,
    StatelessEra,
    StatelessSession,
    StatelessSettings,
)

__all__ = ["AUTO", "EraKind", "Negotiator", "SessionFactory"]

logger = logging.getLogger("mcp_resilient")

AUTO = "auto"
"""Negotiate: the stateless era when the server speaks it, else the handshake."""

EraKind = Literal["stateless", "handshake"]

SessionFactory = Callable[[type[Session], Era], Session]
"""Builds a session of the given class for one endpoint, speaking the given era."""

_UNSET: Any = object()


def check_version(mode: str) -> None:
    """Raise ``ValueError`` for a ``protocol_version`` this client cannot speak."""
    if mode != AUTO and mode not in STATELESS_VERSIONS and mode not in HANDSHAKE_VERSIONS:
        every = ", ".join((AUTO, *STATELESS_VERSIONS, *HANDSHAKE_VERSIONS))
        raise ValueError(f"protocol_version must be one of {every}, not {mode!r}")


class Negotiator:
    """Opens sessions in the right era for each endpoint and remembers what it learned."""

    def __init__(
        self,
        mode: str,
        *,
        client_info: mcp_types.Implementation,
        capabilities: dict[str, Any],
        tool: Callable[[str], mcp_types.Tool | None],
        wants_notifications: bool,
        log_level: str | None = None,
        state_id: str | None = None,
    ) -> None:
        check_version(mode)
        self.mode = mode
        versions = STATELESS_VERSIONS if mode == AUTO else (mode,)
        self.settings = StatelessSettings(
            versions=versions if mode == AUTO or mode in STATELESS_VERSIONS else (),
            client_info=client_info,
            capabilities=capabilities,
            tool=tool,
            wants_notifications=wants_notifications,
            log_level=log_level,
            state_id=state_id,
        )
        self.known: dict[str, EraKind] = {}
        self._forgotten: dict[str, EraKind | None] = {}
        self.probes = 0

    def forget(self, url: str) -> None:
        """The server at ``url`` answered as if it changed eras: probe it again next time."""
        if url in self._forgotten:
            return
        self._forgotten[url] = self.known.pop(url, None)
        logger.info("%s answered as if it changed protocol eras; negotiating again", url)

    def guess(self, url: str) -> EraKind | None:
        """The era to try first at ``url``: what it spoke, else what its siblings speak.

        The endpoints of one client are replicas of one service, so an endpoint not yet
        met most likely speaks what the others do (a wrong guess costs one refused
        request: both eras' refusals lead back here). A forgotten endpoint is probed.
        """
        if url in self.known:
            return self.known[url]
        if url in self._forgotten or not self.known:
            return None
        return next(reversed(self.known.values()))

    async def open(
        self, url: str, new_session: SessionFactory
    ) -> tuple[Session, mcp_types.InitializeResult]:
        """A new session on ``url`` in the era this client should speak there."""
        if self.mode in HANDSHAKE_VERSIONS:
            return await self._handshake(url, new_session, self.mode, renegotiate=False)
        if self.mode != AUTO:
            return await self._stateless(url, new_session, renegotiate=False)
        guess = self.guess(url)
        before = self._forgotten.pop(url, _UNSET)
        if guess != "handshake":
            try:
                session, result = await self._stateless(
                    url, new_session, renegotiate=before != "stateless"
                )
            except LegacyServerError as exc:
                logger.info(
                    "%s does not speak protocol 2026-07-28 (%s); using the handshake",
                    url,
                    exc.message,
                )
            else:
                self.known[url] = "stateless"
                return session, result
            self.known[url] = "handshake"
        try:
            return await self._handshake(
                url, new_session, HANDSHAKE_VERSIONS[0], renegotiate=before != "handshake"
            )
        except HTTPStatusError as exc:
            # A server remembered as handshake-era that refuses `initialize` with a modern
            # error has been upgraded: speak the new era with it.
            if exc.status_code != 400 or modern_error_code(exc.body) is None:
                raise
            self.known.pop(url, None)
            session, result = await self._stateless(url, new_session, renegotiate=False)
            self.known[url] = "stateless"
            return session, result

    async def _stateless(
        self, url: str, new_session: SessionFactory, *, renegotiate: bool
    ) -> tuple[Session, mcp_types.InitializeResult]:
        self.probes += 1
        era = StatelessEra(self.settings)
        session = new_session(StatelessSession, era)
        result = await era.open(session, timeout=None)
        if renegotiate and self.mode == AUTO:
            era.on_era_changed = self.forget
        return session, result

    async def _handshake(
        self, url: str, new_session: SessionFactory, version: str, *, renegotiate: bool
    ) -> tuple[Session, mcp_types.InitializeResult]:
        era = HandshakeEra(
            protocol_version=version,
            client_info=self.settings.client_info,
            capabilities=self.settings.capabilities,
        )
        session = new_session(Session, era)
        result = await era.open(session, timeout=None)
        if renegotiate and self.mode == AUTO:
            era.on_era_changed = self.forget
        return session, result

    def route_era(self) -> StatelessEra:
        """A stateless era for another endpoint of the same client (no discovery needed)."""
        era = StatelessEra(self.settings)
        if self.mode == AUTO:
            era.on_era_changed = self.forget
        return era
