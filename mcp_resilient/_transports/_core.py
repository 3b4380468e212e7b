"""The lean path: our own POST/GET/DELETE, below httpx.

When the client owns its HTTP stack there is nothing to plug in, and httpx's request and
response models (URL parsing, header normalisation, cookies, auth and redirect machinery,
event hooks, content decoding) are work done on every call for nothing: we already know
exactly what we send, and we read the raw body ourselves (bounded decompression). This
path sends the same headers an ``httpx.AsyncClient`` would and raises the same httpx
exception types, so the wire cannot tell the two apart.

Plain-HTTP origins on asyncio go over our own HTTP/1.1 connections (``_h1``); TLS,
HTTP/2 and other event loops go through httpcore. ``MCP_RESILIENT_HTTP_PATH=httpcore``
sends plain HTTP through httpcore too (to compare, or to rule ours out).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import httpcore
import httpx

from . import _h1
from ._base import WireResponse
from ._limits import EndpointSlots

__all__ = ["CoreTransport", "http2_available", "lean_path_possible"]

_USER_AGENT = f"python-httpx/{httpx.__version__}".encode()
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
_TIMEOUTS = {"connect": 10.0, "read": None, "write": 30.0, "pool": None}
"""As the default httpx client: reads unbounded (SSE idles), every call has its deadline."""

_KEEPALIVE = 100
"""Idle connections kept for the next burst, per origin (each holds a file descriptor)."""
_KEEPALIVE_SECONDS = 5.0  # as httpx
_PATH_VARIABLE = "MCP_RESILIENT_HTTP_PATH"


def http2_available() -> bool:
    """Whether the ``h2`` package is installed (the ``http2`` extra)."""
    return importlib.util.find_spec("h2") is not None


def httpx_is_patched() -> bool:
    """Whether something reroutes httpx's transports (respx's ``httpx`` mocker, our own
    ``mcp_resilient.testing`` network): then requests must go through httpx to reach it."""
    method = httpx.AsyncClient.__dict__.get("_transport_for_url")
    return getattr(method, "__module__", None) != "httpx._client"


def httpcore_is_patched() -> bool:
    """Whether a test double (respx's default mocker) answers in httpcore's place: then
    plain HTTP must go through httpcore to reach it, not over our own connections."""
    method = httpcore.AsyncHTTPConnection.__dict__.get("handle_async_request")
    return getattr(method, "__module__", None) != "httpcore._async.connection"


def lean_path_possible(urls: Iterable[str]) -> bool:
    """Whether httpcore alone can carry these endpoints as httpx would: no proxy from the
    environment (httpx honours ``HTTP(S)_PROXY``/``ALL_PROXY``), no credentials in a URL,
    and httpx's transports not rerouted by a test double."""
    if any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES):
        return False
    if httpx_is_patched():
        return False
    return not any("@" in url.split("://", 1)[-1].split("/", 1)[0] for url in urls)


def _error(exc: Exception) -> httpx.TransportError:
    """httpcore's exception as the httpx one of the same name (what the httpx path raises)."""
    kind = getattr(httpx, type(exc).__name__, None)
    if not (isinstance(kind, type) and issubclass(kind, httpx.TransportError)):
        kind = httpx.TransportError
    return kind(str(exc))


_HTTPCORE_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


class _Target:
    """One endpoint URL, parsed once: the httpcore URL, the Host header, and for a plain
    HTTP origin the connections to it (HTTPS goes through httpcore's pool, which shares
    HTTP/2 connections between requests)."""

    __slots__ = ("host", "plain", "target", "url")
    host: bytes
    plain: _Plain | None

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self.url = httpcore.URL(
            scheme=parsed.raw_scheme,
            host=parsed.raw_host,
            port=parsed.port,
            target=parsed.raw_path,
        )
        self.host = parsed.netloc  # bytes: "[::1]:8000", the port only when not the default
        self.target = parsed.raw_path
        self.plain = None


async def _close(connection: Any) -> None:
    """Close a connection even in a cancelled task: its socket must not wait for the GC."""
    with anyio.CancelScope(shield=True):
        await connection.aclose()


class _Plain:
    """HTTP/1.1 connections to one plain-HTTP origin: one request each, idle ones reused.

    httpcore's pool rescans every connection on every request and response (a thousand
    calls in flight cost a million checks); one origin speaking HTTP/1.1 needs no more
    than a stack of idle connections. Newest idle first: it is the least likely to have
    been closed by the server meanwhile.
    """

    __slots__ = ("_backend", "_h1_idle", "_idle", "closed", "origin")

    def __init__(self, origin: httpcore.Origin, backend: Any) -> None:
        self.origin = origin
        self._backend = backend
        self._idle: list[httpcore.AsyncHTTPConnection] = []
        self._h1_idle: list[_h1.H1Connection] = []
        self.closed = False

    async def send_h1(
        self,
        loop: asyncio.AbstractEventLoop,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content: bytes | None,
    ) -> _h1.H1Response:
        """The request on one of our own HTTP/1.1 connections (asyncio only)."""
        idle = self._h1_idle
        for _ in range(3):  # a reused connection may turn out closed: then a new one
            connection = None
            while idle:
                candidate = idle.pop()
                if candidate.loop is loop and candidate.reusable():
                    connection = candidate
                    break
                _drop(candidate, loop)
            reused = connection is not None
            if connection is None:
                connection = await _h1.connect(self.origin.host.decode("ascii"), self.origin.port)
            try:
                return await connection.request(method, target, headers, content, reused=reused)
            except _h1.StaleConnection:
                connection.close()
                continue
            except BaseException:
                connection.close()
                raise
        raise httpx.ConnectError("no connection could be made available")

    def done_h1(self, response: _h1.H1Response) -> None:
        """The response was read or closed: keep its connection for the next request."""
        connection = response.connection
        if response.release() and not self.closed and len(self._h1_idle) < _KEEPALIVE:
            self._h1_idle.append(connection)
        else:
            connection.close()

    def _fresh(self) -> httpcore.AsyncHTTPConnection:
        return httpcore.AsyncHTTPConnection(
            self.origin, keepalive_expiry=_KEEPALIVE_SECONDS, network_backend=self._backend
        )

    async def send(self, request: httpcore.Request) -> tuple[httpcore.Response, Any]:
        idle = self._idle
        for _ in range(3):  # a reused connection may turn out closed: then a new one
            connection = None
            while idle:
                candidate = idle.pop()
                if candidate.is_idle() and not candidate.has_expired():
                    connection = candidate
                    break
                await _close(candidate)
            if connection is None:
                connection = self._fresh()
            try:
                response = await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                await _close(connection)
                continue
            except BaseException:
                await _close(connection)
                raise
            return response, connection
        raise httpcore.ConnectError("no connection could be made available")

    async def done(self, connection: Any) -> None:
        """The response was read or closed: keep the connection for the next request."""
        if (
            not self.closed
            and connection.is_idle()
            and not connection.is_closed()
            and len(self._idle) < _KEEPALIVE
        ):
            self._idle.append(connection)
        else:
            await _close(connection)

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close(connection)
        h1_idle, self._h1_idle = self._h1_idle, []
        loop = _running_loop()
        for h1_connection in h1_idle:
            _drop(h1_connection, loop)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop we run on; None on another event loop (trio): httpcore then."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _drop(connection: _h1.H1Connection, loop: asyncio.AbstractEventLoop | None) -> None:
    """Close a connection from its own loop (a client used from two loops keeps both safe)."""
    if connection.loop is loop:
        connection.close()
    elif not connection.loop.is_closed():
        connection.loop.call_soon_threadsafe(connection.close)


class CoreTransport:
    """One httpcore connection pool for all endpoints; our slots bound each endpoint."""

    __slots__ = ("_backend", "_own_h1", "_plain", "_targets", "pool", "slots")

    def __init__(
        self, urls: Iterable[str], slots: EndpointSlots, *, http2: bool | None = None
    ) -> None:
        self.slots = slots
        self._targets: dict[str, _Target] = {}
        self._plain: dict[tuple[bytes, bytes, int], _Plain] = {}
        self._backend = httpcore.AnyIOBackend()
        self._own_h1 = os.environ.get(_PATH_VARIABLE, "").strip().lower() != "httpcore"
        use_h2 = http2_available() if http2 is None else http2
        # httpx's SSL context (certifi, SSL_CERT_FILE/SSL_CERT_DIR), built only when an
        # endpoint needs TLS: it costs milliseconds a plain-HTTP client never spends.
        tls = any(url.startswith("https://") for url in urls)
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context() if tls else None,
            max_connections=None,
            max_keepalive_connections=_KEEPALIVE,
            keepalive_expiry=5.0,
            http1=True,
            http2=use_h2,
        )

    async def send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None
    ) -> WireResponse:
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        raw = _raw_headers(headers, target.host, content)
        slots = self.slots.get(url)
        if slots is not None:
            await slots.take()
        plain = target.plain
        if plain is not None and self._own_h1 and not httpcore_is_patched():
            loop = _running_loop()
            if loop is not None:
                try:
                    h1_response = await plain.send_h1(
                        loop, method.encode(), target.target, raw, content
                    )
                except BaseException:
                    if slots is not None:
                        slots.give()
                    raise
                return _h1_wire_response(plain, h1_response, slots)
        try:
            request = httpcore.Request(
                method.encode(),
                target.url,
                headers=raw,
                content=content,
                extensions={"timeout": _TIMEOUTS},
            )
            if plain is not None:
                response, connection = await plain.send(request)
            else:
                response = await self.pool.handle_async_request(request)
        except _HTTPCORE_ERRORS as exc:
            if slots is not None:
                slots.give()
            raise _error(exc) from exc
        except BaseException:
            if slots is not None:
                slots.give()
            raise
        stream = response.stream
        lowered = _lowered(response.headers)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:  # type: ignore[union-attr]
                    yield chunk
            except _HTTPCORE_ERRORS as exc:
                raise _error(exc) from exc

        async def close() -> None:
            aclose = getattr(stream, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
            except _HTTPCORE_ERRORS as exc:
                raise _error(exc) from exc
            finally:
                if plain is not None:
                    await plain.done(connection)

        return WireResponse(
            response.status,
            lowered,
            body,
            close,
            slots.give if slots is not None else None,
        )

    def _target(self, url: str) -> _Target:
        target = self._targets[url] = _Target(url)
        if target.url.scheme == b"http":
            origin = target.url.origin
            key = (origin.scheme, origin.host, origin.port)
            plain = self._plain.get(key)
            if plain is None:
                plain = self._plain[key] = _Plain(origin, self._backend)
            target.plain = plain
        return target

    async def aclose(self) -> None:
        for plain in self._plain.values():
            await plain.aclose()
        await self.pool.aclose()


def _lowered(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names in lower case; repeated headers joined with commas, as httpx does."""
    lowered: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        lowered[key] = f"{lowered[key]}, {text}" if key in lowered else text
    return lowered


def _h1_wire_response(plain: _Plain, response: _h1.H1Response, slots: Any) -> WireResponse:
    released = False

    async def close() -> None:
        nonlocal released
        if not released:
            released = True
            plain.done_h1(response)

    return WireResponse(
        response.status,
        _lowered(response.headers),
        response.body,
        close,
        slots.give if slots is not None else None,
    )


def _raw_headers(
    headers: dict[str, str], host: bytes, content: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The headers as bytes, with httpx's defaults for any the caller did not set."""
    present = {name.lower() for name in headers}
    raw = [] if "host" in present else [(b"Host", host)]
    if "accept" not in present:
        raw.append((b"Accept", b"*/*"))
    if "connection" not in present:
        raw.append((b"Connection", b"keep-alive"))
    if "user-agent" not in present:
        raw.append((b"User-Agent", _USER_AGENT))
    raw.extend((name.encode("ascii"), value.encode("ascii")) for name, value in headers.items())
    if content is not None and "content-length" not in present:
        raw.append((b"Content-Length", str(len(content)).encode("ascii")))
    return raw
