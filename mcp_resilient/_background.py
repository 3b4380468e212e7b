"""Background tasks owned by the client, not by the task that opened it.

The listen stream, replies to server requests, ``notifications/cancelled`` POSTs and
endpoint probes outlive the call that started them. Running them in a task group entered
by ``__aenter__`` tied the client to one task (opening in one task and closing in another
raised "Attempted to exit cancel scope in a different task") and let one failing
background task cancel the user's own code. Here each one is a plain asyncio task, kept
in a set and cancelled on close, and whatever it raises is logged and reported as an
event: a background failure never reaches the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._events import EventSink

__all__ = ["Background"]

logger = logging.getLogger("mcp_resilient")

_CLOSE_WAIT_SECONDS = 5.0
"""How long ``aclose`` waits for cancelled tasks to unwind before leaving them."""


class Background:
    """A supervisor for the client's background tasks (asyncio only).

    ``start_soon`` has the task group's signature so the session code reads the same.
    """

    def __init__(self, events: EventSink) -> None:
        self._events = events
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "ResilientClient runs on asyncio (anyio's asyncio backend); no asyncio event"
                " loop is running in this thread"
            ) from None
        self._tasks: set[asyncio.Task[None]] = set()
        self._scopes: set[anyio.CancelScope] = set()
        self.closed = False

    def start_soon(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run ``func(*args)`` in the background; ignored once closed."""
        if self.closed:
            return
        label = name or str(getattr(func, "__qualname__", repr(func)))
        task = self._loop.create_task(self._run(func, args, label), name=label)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...], label: str
    ) -> None:
        if self.closed:
            return
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await func(*args)
            except Exception as exc:
                # Never let a background failure escape: log it, report it, move on.
                logger.debug("background task %s failed", label, exc_info=True)
                await self._events.emit(
                    "background_error",
                    task=label,
                    error=f"{exc.__class__.__name__}: {exc}"[:500],
                )
            finally:
                self._scopes.discard(scope)

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self, timeout: float = _CLOSE_WAIT_SECONDS) -> None:
        """Cancel every background task and wait (bounded) for them to finish."""
        self.closed = True
        for scope in list(self._scopes):
            scope.cancel()
        pending = [task for task in self._tasks if not task.done()]
        if not pending:
            return
        with anyio.CancelScope(shield=True):
            _, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            logger.warning("background task %s did not stop within %g s", task.get_name(), timeout)
            task.cancel()
