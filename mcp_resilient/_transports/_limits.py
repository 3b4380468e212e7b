"""Connection slots: how many requests one endpoint may have open at once.

Each request in flight over HTTP/1.1 holds one connection, so one file descriptor; the
default limit is therefore taken from the process's ``RLIMIT_NOFILE``. A call that finds
every slot taken waits in a first-come queue, inside its own deadline (the caller's cancel
scope), and marks itself queued so that a deadline error can say where the time went.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "CURRENT_MARK",
    "DEFAULT_CAP",
    "FD_RESERVE",
    "EndpointSlots",
    "QueueMark",
    "Slots",
    "default_connection_limit",
    "origin_of",
]

DEFAULT_CAP = 4096
"""Most requests per endpoint at once on the defaults, however high the descriptor limit."""

FD_RESERVE = 128
"""Descriptors left to the rest of the process (files, the listen streams, other sockets)."""

_FLOOR = 100


def default_connection_limit(soft_limit: int | None = None) -> int:
    """Requests per endpoint at once on the defaults: half the descriptors left after a
    reserve (the other half for other endpoints and the application), within 100..4096."""
    if soft_limit is None:
        try:
            import resource

            soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft_limit == resource.RLIM_INFINITY:
                return DEFAULT_CAP
        except (ImportError, OSError, ValueError):  # no `resource` (Windows)
            return DEFAULT_CAP
    return max(_FLOOR, min(DEFAULT_CAP, (soft_limit - FD_RESERVE) // 2))


@dataclass(slots=True, eq=False)
class QueueMark:
    """What one call spent waiting for a connection slot (filled in by ``Slots``)."""

    queued_since: float | None = None  # monotonic time it started waiting; None: not waiting
    queued_for: float = 0.0  # seconds waited so far, over all its attempts
    queue_limit: int | None = None  # the limit it queued behind
    queue_endpoint: str | None = None
    left_queued: bool = False  # its last wait ended without a slot (deadline, cancel)


CURRENT_MARK: ContextVar[QueueMark | None] = ContextVar("mcp_resilient_queue", default=None)
"""The queue record of the call the current task is making (the client sets it)."""


class Slots:
    """A first-come counting limit, cheap when a slot is free (no await, no lock)."""

    __slots__ = ("_waiters", "endpoint", "limit", "used")

    def __init__(self, limit: int, endpoint: str) -> None:
        self.limit = limit
        self.endpoint = endpoint
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        """Take a slot, waiting in line if none is free (cancellable: the call's deadline)."""
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return
        mark = CURRENT_MARK.get()
        started = time.monotonic()
        if mark is not None:
            mark.queued_since = started
            mark.left_queued = False
            mark.queue_limit = self.limit
            mark.queue_endpoint = self.endpoint
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if mark is not None:
                mark.left_queued = True
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            if mark is not None:
                mark.queued_since = None
                mark.queued_for += time.monotonic() - started

    def give(self) -> None:
        """Return a slot: straight to the next in line, if any."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves over; `used` stays
                return
        self.used -= 1


def origin_of(url: str) -> str:
    """``scheme://host:port`` of an endpoint URL: connections are per origin."""
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1].lower()
    if not authority.endswith("]") and ":" in authority:
        return f"{scheme}://{authority}"
    return f"{scheme}://{authority}:{443 if scheme == 'https' else 80}"


class EndpointSlots:
    """One ``Slots`` per origin, made on first use; ``limit=None``: no limit of ours."""

    __slots__ = ("_by_origin", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._by_origin: dict[str, Slots] = {}

    def get(self, url: str) -> Slots | None:
        if self.limit is None:
            return None
        slots = self._by_origin.get(url)
        if slots is None:
            origin = origin_of(url)
            slots = next(
                (s for s in self._by_origin.values() if s.endpoint == origin),
                None,
            ) or Slots(self.limit, origin)
            self._by_origin[url] = slots  # cached by the full URL: no parsing per request
        return slots
