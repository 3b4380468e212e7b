"""Per-request endpoint choice for the stateless era (part of the recovery layer).

With no session, nothing pins a client to one endpoint: each request may go to the best
healthy endpoint (fewest in flight, ties at random, the pool's failure accrual deciding
"healthy"). The connection the client negotiated (the *primary*) is the route to its own
endpoint; routes to the others are made on first use, speak the same negotiated era and
share its request-id counter. Any failure that would end the primary's session on one
route ends the primary, so the recovery layer negotiates again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._eras import StatelessSession
from ._exchange import Session
from ._pool import Endpoint, EndpointPool

__all__ = ["StatelessRoutes"]


class StatelessRoutes:
    """Sessions per endpoint for the stateless era, chosen per request."""

    def __init__(
        self,
        pool: EndpointPool,
        new_route: Callable[[str], Session],
        eligible: Callable[[str], bool] = lambda url: True,
    ) -> None:
        self.pool = pool
        self.new_route = new_route
        self.eligible = eligible
        self._primary: Session | None = None
        self._routes: dict[str, Session] = {}

    def route(self, primary: Session) -> Session:
        """The session the next request goes out on (the primary itself in the handshake era)."""
        if not isinstance(primary, StatelessSession) or len(self.pool.endpoints) < 2:
            return primary
        if primary is not self._primary:
            self._primary = primary
            self._routes = {primary.endpoint: primary}
        url = self._best().url
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = self.new_route(url)
        return route

    def to(self, url: str) -> Session:
        """The route to ``url`` (made on first use), for a request that must go there."""
        assert self._primary is not None
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = self.new_route(url)
        return route

    def _best(self) -> Endpoint:
        now = time.monotonic()
        up = [
            e
            for e in self.pool.endpoints
            if not e.is_down(now) and (self.eligible(e.url) or e.url == self._endpoint())
        ]
        if not up:
            return self.pool.get(self._endpoint())
        fewest = min(e.in_flight for e in up)
        return self.pool.rng.choice([e for e in up if e.in_flight == fewest])

    def _endpoint(self) -> str:
        assert self._primary is not None
        return self._primary.endpoint

    def owner(self, session: Session) -> Session:
        """The primary a route belongs to (a route's lost session is the primary's)."""
        primary = self._primary
        is_route = self._routes.get(session.endpoint) is session
        return primary if primary is not None and is_route else session
