"""The endpoint pool: which URL a new session goes to, and which URLs are down.

Failure accrual in the style of Finagle and Envoy: an endpoint that fails
``failure_threshold`` times in a row is marked down for a jittered, growing
interval; a background probe brings it back as soon as it answers HTTP again.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ._policy import RetryPolicy

__all__ = ["Endpoint", "EndpointPool"]


@dataclass(slots=True)
class Endpoint:
    """One MCP endpoint URL and what we know of its health."""

    url: str
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0
    down_interval: float = 0.0
    probing: bool = False
    honours_keys: bool | None = None
    """Whether this endpoint's own ``initialize`` / ``server/discover`` declared the
    exactly-once extension (None: not asked yet). A keyed re-send goes only where True."""

    def is_down(self, now: float) -> bool:
        return self.down_until > now


class EndpointPool:
    """Picks endpoints (fewest calls in flight, ties at random) and tracks their health."""

    def __init__(
        self, urls: tuple[str, ...], policy: RetryPolicy, rng: random.Random | None = None
    ) -> None:
        self.endpoints = [Endpoint(url) for url in urls]
        self.policy = policy
        self.rng = rng or random.Random()

    def get(self, url: str) -> Endpoint:
        for endpoint in self.endpoints:
            if endpoint.url == url:
                return endpoint
        raise KeyError(url)

    def pick(self, avoid: str | None = None) -> Endpoint:
        """The best endpoint for a new session; ``avoid`` only when nothing else is up."""
        now = time.monotonic()
        up = [e for e in self.endpoints if not e.is_down(now)]
        if not up:
            # Everything is down: try the one that has been down the shortest time.
            return min(self.endpoints, key=lambda e: (e.down_until, e.url == avoid))
        preferred = [e for e in up if e.url != avoid] or up
        fewest = min(e.in_flight for e in preferred)
        return self.rng.choice([e for e in preferred if e.in_flight == fewest])

    def record_success(self, endpoint: Endpoint) -> bool:
        """Reset failure accrual; returns True when the endpoint was down until now."""
        was_down = endpoint.down_until > 0
        endpoint.failures = 0
        endpoint.down_until = 0.0
        endpoint.down_interval = 0.0
        return was_down

    def record_failure(self, endpoint: Endpoint) -> bool:
        """Count a failure; returns True when this failure marks the endpoint down."""
        endpoint.failures += 1
        if endpoint.failures < self.policy.failure_threshold:
            return False
        self.mark_down(endpoint)
        return True

    def mark_down(self, endpoint: Endpoint) -> None:
        base = endpoint.down_interval * 2 if endpoint.down_interval else self.policy.down_interval
        endpoint.down_interval = min(self.policy.max_down_interval, base)
        jittered = endpoint.down_interval * self.rng.uniform(0.5, 1.0)
        endpoint.down_until = time.monotonic() + jittered

    def all_down(self) -> bool:
        now = time.monotonic()
        return all(e.is_down(now) for e in self.endpoints)
