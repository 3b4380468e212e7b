"""Retry policy as one small value: attempts, backoff, budget and endpoint health.

Backoff is exponential with full jitter and a cap (tenacity's
``wait_random_exponential``); the budget is a token bucket in the style of gRPC
retry throttling, so a client facing a wholly failing fleet slows its retries down
instead of multiplying the load.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tenacity import RetryCallState, wait_random_exponential

__all__ = ["NO_RETRY", "RetryBudget", "RetryPolicy"]

_NO_RETRYING = None
"""tenacity's wait strategies only read the attempt number from the call state."""


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Token bucket: each failed attempt costs one token, each success earns ``token_ratio``.

    While the bucket holds no more than half of ``max_tokens``, retries are throttled:
    they wait ``max_backoff`` instead of the usual backoff (gRPC's retry throttling).
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.token_ratio <= 0:
            raise ValueError("RetryBudget needs positive max_tokens and token_ratio")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the client tries before giving up. Every wait stays inside the call's deadline.

    Args:
        max_attempts: Attempts per call, the first included (``None``: until the deadline).
        initial_backoff: Scale of the first backoff, in seconds.
        max_backoff: Cap on one backoff, in seconds.
        budget: Retry throttling across calls (``None`` turns it off).
        failure_threshold: Consecutive failures that mark an endpoint down.
        down_interval: First time an endpoint stays down before a probe (grows, jittered).
        max_down_interval: Cap on the down interval.
    """

    max_attempts: int | None = None
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    budget: RetryBudget | None = field(default_factory=RetryBudget)
    failure_threshold: int = 2
    down_interval: float = 0.5
    max_down_interval: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff values must not be negative")
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.down_interval <= 0 or self.max_down_interval < self.down_interval:
            raise ValueError("down_interval must be positive and at most max_down_interval")

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1``."""
        wait = wait_random_exponential(multiplier=self.initial_backoff, max=self.max_backoff)
        state = RetryCallState(_NO_RETRYING, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        return float(wait(state))


NO_RETRY = RetryPolicy(max_attempts=1, budget=None)
"""A policy that never retries (one attempt)."""


class TokenBucket:
    """Runtime state of a ``RetryBudget``, shared by all calls of one client."""

    def __init__(self, budget: RetryBudget | None) -> None:
        self.budget = budget
        self.tokens = budget.max_tokens if budget else 0.0
        self._lock = threading.Lock()

    def on_success(self) -> None:
        if self.budget is not None and self.tokens < self.budget.max_tokens:
            with self._lock:
                self.tokens = min(self.budget.max_tokens, self.tokens + self.budget.token_ratio)

    def on_failure(self) -> None:
        if self.budget is not None:
            with self._lock:
                self.tokens = max(0.0, self.tokens - 1)

    @property
    def throttled(self) -> bool:
        return self.budget is not None and self.tokens <= self.budget.max_tokens / 2
