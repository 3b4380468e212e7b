"""The interactive step for a local user: a loopback redirect listener and a browser opener."""

from __future__ import annotations

import logging
import socket
import webbrowser
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc

from ._errors import AuthorizationError

logger = logging.getLogger("mcp_resilient.auth")

__all__ = ["LoopbackHandler", "open_browser"]

_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>mcp-resilient</title></head>"
    b"<body><p>%s</p><p>You can close this window.</p></body></html>"
)


def open_browser(url: str, show: Callable[[str], None] | None = None) -> bool:
    """Open ``url`` in the user's browser; when that is impossible, hand it to ``show``.

    ``show`` gets a line for the user (the CLI prints it); by default it is logged.
    Returns whether a browser was opened.
    """
    try:
        opened = webbrowser.open(url)
    except Exception:  # any browser failure means: print the URL
        opened = False
    if not opened:
        message = f"Open this URL in a browser to log in:\n  {url}"
        if show is not None:
            show(message)
        else:
            logger.warning("%s", message)
    return opened


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LoopbackHandler:
    """Receives the authorization redirect on ``http://127.0.0.1:<port>/callback``.

    ``redirect`` starts listening, then opens the browser (or prints the URL via
    ``show``); ``callback`` waits for the browser to arrive and returns the redirect's
    query parameters. Only 127.0.0.1 is listened on (RFC 8252 loopback redirect).

    Any web page can make the browser send a request to a loopback port, so the listener
    only takes the redirect that carries the ``state`` of the authorization URL it was
    given; other requests get a 400 and it keeps waiting (the login's deadline bounds it).

    Args:
        port: Fixed port (keep it stable when the client registration is stored);
            0 picks a free one.
        path: The redirect path.
        open_url: Replaces the browser opener (tests drive the login with it).
        show: Where the "open this URL" line goes when no browser opens.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int = 0,
        *,
        path: str = "/callback",
        open_url: Callable[[str], object] | None = None,
        show: Callable[[str], None] | None = None,
    ) -> None:
        self.port = port or _free_port(self.host)
        self.path = path
        self.redirect_uri = f"http://{self.host}:{self.port}{path}"
        self._open_url = open_url
        self._show = show
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._result: Mapping[str, str] | None = None
        self._arrived = anyio.Event()
        self._state: str | None = None

    async def redirect(self, authorization_url: str) -> None:
        query = dict(parse_qsl(urlsplit(authorization_url).query))
        self._state = query.get("state")
        await self._listen()
        try:
            if self._open_url is not None:
                outcome = self._open_url(authorization_url)
                if hasattr(outcome, "__await__"):
                    await outcome
            else:
                await anyio.to_thread.run_sync(open_browser, authorization_url, self._show)
        except BaseException:
            await self.aclose()  # nobody will come back to it
            raise

    async def callback(self) -> Mapping[str, str]:
        if self._listener is None:
            raise RuntimeError("callback() before redirect()")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve, tg.cancel_scope)
                await self._arrived.wait()
                tg.cancel_scope.cancel()
        finally:
            await self.aclose()
        assert self._result is not None
        result, self._result = self._result, None
        self._arrived = anyio.Event()
        return result

    async def _listen(self) -> None:
        if self._listener is None:
            try:
                self._listener = await anyio.create_tcp_listener(
                    local_host=self.host, local_port=self.port, reuse_port=False
                )
            except OSError as exc:
                raise AuthorizationError(
                    f"cannot listen for the login's redirect on {self.host}:{self.port}"
                    f" ({exc.strerror or exc})",
                    hint="Another program uses that port: pick another one"
                    " (LoopbackHandler(port=...), or mcp-call ... login --port)",
                ) from exc

    async def _serve(self, scope: anyio.CancelScope) -> None:
        assert self._listener is not None
        await self._listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            with anyio.move_on_after(10):
                while b"\r\n\r\n" not in data and len(data) < 16384:
                    chunk = await stream.receive(4096)
                    if not chunk:
                        break
                    data += chunk
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            target = parts[1] if len(parts) >= 2 else "/"
            url = urlsplit(target)
            if parts[0] != "GET" or url.path != self.path or self._result is not None:
                await stream.send(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            params = dict(parse_qsl(url.query))
            if self._state is not None and params.get("state") != self._state:
                # Not the redirect of this login (a forged or stale request): say so, and
                # keep waiting for the real one.
                body = _PAGE % b"This is not the login this program is waiting for."
                await stream.send(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html; charset=utf-8\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                logger.warning("ignored a request to the login listener without this login's state")
                return
            text = b"Login failed." if "error" in params else b"Login complete."
            body = _PAGE % text
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            self._result = params
            self._arrived.set()

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
