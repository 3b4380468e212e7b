"""``SyncResilientClient``: the async client's API, blocking, for scripts, notebooks and threads.

The async client runs on an event loop of its own in a portal thread
(``anyio.from_thread.start_blocking_portal``). That is what makes it usable from any
thread at once, and from a thread that already runs an event loop (a Jupyter cell), where
``asyncio.run`` would fail. Deadlines and errors are the async client's own: each call
runs there, under its deadline, and re-raises the same typed exception here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, TypeVar

import mcp_types
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._client import ClientStats, ResilientClient
from ._handlers import ProgressHandler
from .errors import ClientClosedError

__all__ = ["SyncResilientClient"]

T = TypeVar("T")
Timeout = float | Literal["default"] | None
SyncProgressHandler = Callable[[float, float | None, str | None], None]
"""``def on_progress(progress, total, message)``: a plain function, for blocking code."""


def _as_async(
    handler: ProgressHandler | SyncProgressHandler | None,
) -> ProgressHandler | None:
    if handler is None or inspect.iscoroutinefunction(handler):
        return handler
    plain = handler

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        outcome = plain(progress, total, message)
        if inspect.isawaitable(outcome):  # an async callable that is not a coroutine function
            await outcome

    return on_progress


class SyncResilientClient:
    """The blocking twin of ``ResilientClient``: same arguments, same methods, same errors.

    ```python
    with SyncResilientClient(["http://127.0.0.1:8000/mcp", "http://127.0.0.1:8001/mcp"]) as client:
        result = client.call_tool("add", {"a": 1, "b": 2})
    ```

    Opening it (``with``, or ``open()``) starts a portal thread with its own event loop and
    the handshake; ``close()`` ends the session and stops the thread. Any thread may call
    it concurrently, and any thread may close it: calls still running then raise
    ``ClientClosedError``. Callbacks (``on_event``, handlers, ``progress_handler``) run on
    the portal thread, as on the async client's loop.
    """

    def __init__(self, endpoints: str | Sequence[str], **options: Any) -> None:
        # Built here so bad arguments fail at once, in the caller's thread.
        self._client = ResilientClient(endpoints, **options)
        self._lock = threading.Lock()
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._closed = False

    @property
    def async_client(self) -> ResilientClient:
        """The ``ResilientClient`` underneath (it lives on the portal thread's loop)."""
        return self._client

    # -- lifecycle -----------------------------------------------------------------

    def open(self) -> SyncResilientClient:
        """Start the portal thread and open the session (the handshake, within ``timeout``)."""
        with self._lock:
            if self._portal is not None:
                raise RuntimeError("SyncResilientClient is already open")
            if self._closed:
                raise ClientClosedError("the client was closed; make a new one")
            cm = start_blocking_portal(backend="asyncio", name="mcp-resilient-portal")
            portal = cm.__enter__()
            try:
                portal.call(self._client.__aenter__)
            except BaseException as exc:
                cm.__exit__(type(exc), exc, exc.__traceback__)
                raise
            self._portal_cm, self._portal = cm, portal
        return self

    def close(self) -> None:
        """End the session (DELETE), stop the portal thread. Any thread; safe to call twice."""
        with self._lock:
            cm, portal = self._portal_cm, self._portal
            self._portal_cm, self._portal, self._closed = None, None, True
        if cm is None or portal is None:
            return
        try:
            portal.call(self._client.aclose)
        finally:
            # Calls still in flight are cancelled; they raise ClientClosedError (see _run).
            with contextlib.suppress(RuntimeError):  # already stopped
                portal.call(portal.stop, True)
            cm.__exit__(None, None, None)

    def __enter__(self) -> SyncResilientClient:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        portal = self._portal
        if portal is None:
            raise ClientClosedError(
                "the client is not open",
                hint="Use it inside 'with SyncResilientClient(...)' or call open() first",
            )
        try:
            return portal.call(lambda: func(*args, **kwargs))
        except (concurrent.futures.CancelledError, RuntimeError) as exc:
            # The portal stopped under this call: another thread closed the client.
            if self._portal is None:
                raise ClientClosedError(
                    "the client was closed while this call was running"
                ) from exc
            raise

    # -- facts about the connection ------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The configured endpoint URLs."""
        return self._client.endpoints

    @property
    def state_id(self) -> str:
        """The id of this client's state on kit servers (2026-07-28 era); read-only."""
        return self._client.state_id

    @property
    def stats(self) -> ClientStats:
        """Counters of what the client had to do to keep going."""
        return self._client.stats

    @property
    def session_id(self) -> str | None:
        """The current ``Mcp-Session-Id`` (``None`` if the server does not use sessions)."""
        return self._client.session_id

    @property
    def endpoint(self) -> str | None:
        """The endpoint URL the current session lives on."""
        return self._client.endpoint

    @property
    def protocol_version(self) -> str | None:
        """The negotiated protocol version."""
        return self._client.protocol_version

    @property
    def server_info(self) -> mcp_types.Implementation | None:
        """The server's name and version from ``initialize``."""
        return self._client.server_info

    @property
    def server_capabilities(self) -> mcp_types.ServerCapabilities | None:
        """What the server said it can do."""
        return self._client.server_capabilities

    @property
    def instructions(self) -> str | None:
        """The server's usage instructions, if it sent any."""
        return self._client.instructions

    def cached_tool(self, name: str) -> mcp_types.Tool | None:
        """The tool as last listed by ``list_tools`` (``None`` if not listed yet)."""
        return self._client.cached_tool(name)

    @property
    def tools_fresh(self) -> bool:
        """Is the last tools list within the ``ttlMs`` the server gave with it?"""
        return self._client.tools_fresh

    # -- requests ------------------------------------------------------------------

    def list_tools(self, *, timeout: Timeout = "default") -> list[mcp_types.Tool]:
        """All the server's tools (every page). Also caches their annotations."""
        return self._run(self._client.list_tools, timeout=timeout)

    def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        progress_handler: ProgressHandler | SyncProgressHandler | None = None,
        timeout: Timeout = "default",
        meta: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        idempotency_key: str | None = None,
    ) -> mcp_types.CallToolResult:
        """Call a tool; re-sent after an ambiguous failure only when safe (as the async client).

        ``progress_handler`` may be a plain function here (it runs on the portal thread).
        """
        return self._run(
            self._client.call_tool,
            name,
            arguments,
            progress_handler=_as_async(progress_handler),
            timeout=timeout,
            meta=meta,
            idempotent=idempotent,
            idempotency_key=idempotency_key,
        )

    def list_resources(self, *, timeout: Timeout = "default") -> list[mcp_types.Resource]:
        """All the server's resources (every page)."""
        return self._run(self._client.list_resources, timeout=timeout)

    def list_resource_templates(
        self, *, timeout: Timeout = "default"
    ) -> list[mcp_types.ResourceTemplate]:
        """All the server's resource templates (every page)."""
        return self._run(self._client.list_resource_templates, timeout=timeout)

    def read_resource(
        self, uri: str, *, timeout: Timeout = "default"
    ) -> mcp_types.ReadResourceResult:
        """Read one resource by URI."""
        return self._run(self._client.read_resource, uri, timeout=timeout)

    def list_prompts(self, *, timeout: Timeout = "default") -> list[mcp_types.Prompt]:
        """All the server's prompts (every page)."""
        return self._run(self._client.list_prompts, timeout=timeout)

    def get_prompt(
        self,
        name: str,
        arguments: Mapping[str, str] | None = None,
        *,
        timeout: Timeout = "default",
    ) -> mcp_types.GetPromptResult:
        """Render a prompt with its arguments."""
        return self._run(self._client.get_prompt, name, arguments, timeout=timeout)

    def ping(self, *, timeout: Timeout = "default") -> None:
        """Check that the server answers."""
        self._run(self._client.ping, timeout=timeout)

    def set_logging_level(
        self, level: mcp_types.LoggingLevel, *, timeout: Timeout = "default"
    ) -> None:
        """Ask the server to send log messages at ``level`` and above."""
        self._run(self._client.set_logging_level, level, timeout=timeout)

    def send_roots_list_changed(self, *, timeout: Timeout = "default") -> None:
        """Tell the server the client's roots changed."""
        self._run(self._client.send_roots_list_changed, timeout=timeout)

    def subscribe_resource(self, uri: str, *, timeout: Timeout = "default") -> None:
        """Be told (``resource_updated_handler``) when the resource at ``uri`` changes."""
        self._run(self._client.subscribe_resource, uri, timeout=timeout)

    def unsubscribe_resource(self, uri: str, *, timeout: Timeout = "default") -> None:
        """Stop the updates of ``subscribe_resource(uri)``."""
        self._run(self._client.unsubscribe_resource, uri, timeout=timeout)
