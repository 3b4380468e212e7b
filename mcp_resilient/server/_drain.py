"""Graceful drain: on SIGTERM, fail health, refuse new work, finish in-flight, then exit.

A rolling deploy sends SIGTERM to one replica after another. Left alone, uvicorn and
sse-starlette end open answers at once (sse-starlette 3.7.1 and later end an SSE answer
cleanly, with no event), so every call in flight is cut and its caller is left in doubt.
With a ``Drain``:

1. ``/health`` answers 503 at once, so load balancers and readiness probes take the
   replica out;
2. new MCP requests are refused with 503 and ``Retry-After`` before they run (clients read
   that as "never ran" and go elsewhere); messages that belong to work already running
   (responses to the server's own requests, notifications) still get through;
3. the requests already running finish and their answers, SSE streams included, reach
   the client, for at most ``drain_timeout`` seconds;
4. only then is the server told to shut down, and the process exits.

Long-lived listen streams (GET, ``subscriptions/listen``) are not "in flight": they end
with the server, and clients reopen them on another replica.

``serve`` runs a uvicorn server that takes SIGTERM/SIGINT itself, before uvicorn (and
sse-starlette, which watches uvicorn's exit flag) can see it; whatever either does at
shutdown then happens to connections that are already idle. A second signal stops
waiting; a third exits at once. Behind another server, call ``Drain.begin()`` from its
shutdown hook and wait for ``Drain.wait_idle()`` before letting it stop.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from types import FrameType
from typing import Any

import anyio

__all__ = ["DEFAULT_DRAIN_TIMEOUT", "Drain", "DrainMiddleware", "attach", "serve"]

logger = logging.getLogger("mcp_resilient.server")

DEFAULT_DRAIN_TIMEOUT = 30.0
"""Seconds in-flight calls get to finish after SIGTERM (keep it below the orchestrator's
grace period, e.g. Kubernetes' ``terminationGracePeriodSeconds``)."""

_TICK = 0.1  # how often the server looks whether a drain began (uvicorn's own tick)
_LONG_LIVED = b"subscriptions/listen"  # a POST that stays open as a listen stream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Drain:
    """Counts the MCP requests in flight and, once ``begin`` is called, turns new ones away.

    Args:
        drain_timeout: Most seconds to wait for in-flight requests after ``begin``.
        retry_after: ``Retry-After`` seconds on the 503s sent while draining.
        health_path: The health route that answers 503 once draining.
        mcp_path: The MCP endpoint whose requests are counted and refused.
    """

    def __init__(
        self,
        *,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        retry_after: int = 1,
        health_path: str | None = "/health",
        mcp_path: str = "/mcp",
    ) -> None:
        if drain_timeout < 0:
            raise ValueError("drain_timeout must be >= 0")
        self.drain_timeout = drain_timeout
        self.retry_after = retry_after
        self.health_path = health_path.rstrip("/") if health_path else None
        self.mcp_path = mcp_path.rstrip("/")
        self.draining = False
        self.in_flight = 0
        self.refused = 0
        self.began_at: float | None = None
        self._idle: anyio.Event | None = None

    def begin(self) -> None:
        """Start draining: health fails, new requests are refused. Safe from a signal handler."""
        if not self.draining:
            self.draining = True
            self.began_at = time.monotonic()
            logger.info("draining: %d request(s) in flight", self.in_flight)

    async def wait_idle(self) -> bool:
        """Wait until no request is in flight, at most ``drain_timeout``; True if drained."""
        self._idle = anyio.Event()
        if self.in_flight == 0:
            return True
        with anyio.move_on_after(self.drain_timeout):
            await self._idle.wait()
            return True
        logger.warning(
            "drain timed out after %g s with %d request(s) in flight",
            self.drain_timeout,
            self.in_flight,
        )
        return False

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind this drain (an ASGI middleware)."""
        return DrainMiddleware(app, drain=self)

    async def _refuse(self, send: Send, body: dict[str, Any]) -> None:
        self.refused += 1
        content = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"retry-after", str(self.retry_after).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


class DrainMiddleware:
    """The ASGI side of a ``Drain`` (Starlette ``Middleware(DrainMiddleware, drain=...)``)."""

    def __init__(self, app: ASGIApp, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drain = self.drain
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", "")).rstrip("/")
        if path == drain.health_path and drain.draining:
            await drain._refuse(send, {"status": "draining"})
            return
        if path != drain.mcp_path:
            await self.app(scope, receive, send)
            return
        method = scope.get("method")
        if method != "POST":
            # GET opens a listen stream (or resumes one): long-lived, never counted. While
            # draining it goes to another replica. DELETE ends a session: always let it.
            if drain.draining and method == "GET":
                await drain._refuse(send, _rpc_error(None, "server is draining"))
                return
            await self.app(scope, receive, send)
            return
        messages, body = await _read_body(receive)
        request_id, is_request, long_lived = _what(body)
        if drain.draining and is_request:
            # Refused before it runs: the client knows it never ran and goes elsewhere.
            await drain._refuse(send, _rpc_error(request_id, "server is draining; retry"))
            return
        replay = _replay(messages, receive)
        if long_lived:
            await self.app(scope, replay, send)
            return
        drain.in_flight += 1
        try:
            await self.app(scope, replay, send)
        finally:
            drain.in_flight -= 1
            if drain.in_flight == 0 and drain._idle is not None:
                drain._idle.set()


def attach(mcp: Any, drain: Drain) -> None:
    """Put ``drain`` in front of every app ``mcp.http_app()`` builds (outermost)."""
    from starlette.middleware import Middleware

    original = mcp.http_app

    def http_app(*args: Any, **kwargs: Any) -> Any:
        import fastmcp

        path = kwargs.get("path") or fastmcp.settings.streamable_http_path
        drain.mcp_path = str(path).rstrip("/")
        middleware = list(kwargs.get("middleware") or [])
        kwargs["middleware"] = [Middleware(DrainMiddleware, drain=drain), *middleware]
        return original(*args, **kwargs)

    mcp.http_app = http_app


def _rpc_error(request_id: Any, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32000, "message": message}}


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    """The request's body messages (to replay them to the app) and its bytes."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _what(body: bytes) -> tuple[Any, bool, bool]:
    """(request id, is it a JSON-RPC request, is it a long-lived listen request)."""
    try:
        message = json.loads(body)
    except ValueError:
        return None, True, False  # the app answers it (an error): it is short
    if not isinstance(message, dict):
        return None, True, False
    is_request = "method" in message and "id" in message
    long_lived = _LONG_LIVED in body and message.get("method") == _LONG_LIVED.decode()
    return message.get("id"), is_request, long_lived


def serve(
    app: ASGIApp,
    drain: Drain,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sockets: Sequence[socket.socket] | None = None,
    **config: Any,
) -> None:
    """Run ``app`` (already behind ``drain``) on uvicorn, draining on SIGTERM/SIGINT.

    ``config`` goes to ``uvicorn.Config`` (``log_level``, ``timeout_graceful_shutdown``...).
    The process exits once in-flight requests have finished (or ``drain.drain_timeout``).
    """
    import uvicorn

    config.setdefault("timeout_graceful_shutdown", 5)
    server = _draining_server_class()(uvicorn.Config(app, host=host, port=port, **config), drain)
    server.run(sockets=list(sockets) if sockets is not None else None)


def _draining_server_class() -> type[Any]:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn that drains first: it sees the exit signal only once the drain is done."""

        def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
            super().__init__(config)
            self.drain = drain
            self._signals = 0

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals == 1 and not self.should_exit:
                self.drain.begin()
                return
            # A second signal: stop waiting (uvicorn's own second-signal rules apply after).
            super().handle_exit(sig, frame)

        async def main_loop(self) -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drain_then_exit)
                await super().main_loop()
                tg.cancel_scope.cancel()

        async def _drain_then_exit(self) -> None:
            # Polled: the signal handler only flips a flag (it must not touch the loop).
            while not self.drain.draining:  # noqa: ASYNC110
                await anyio.sleep(_TICK)
            await self.drain.wait_idle()
            if not self.should_exit:
                logger.info("drained (%d refused); shutting down", self.drain.refused)
                # As if the signal arrived now: uvicorn (and sse-starlette) shut down.
                super().handle_exit(signal.SIGTERM, None)

    return DrainingServer
