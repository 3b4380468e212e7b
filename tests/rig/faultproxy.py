"""A fault-injecting TCP proxy for HTTP/1.1 on loopback (asyncio).

It sits between a client and a server and forwards bytes both ways. It reads just enough
HTTP to pair each response with its request (keep-alive, no pipelining: what httpx does)
and to find where each response body starts and ends. Per response, a *policy* decides
whether to cut the connection in the server-to-client direction, and where:

- ``Cut(at_byte=n)``: after ``n`` bytes of the response body as sent on the wire
  (chunk framing included; 0 means right after the headers);
- ``Cut(after_events=n)``: right after the ``n``-th complete SSE event of the body;
- ``mode="fin"`` closes both sides gracefully (the client sees EOF mid-body),
  ``mode="rst"`` aborts both with a TCP reset (bytes still in flight may be lost);
- ``hold=True`` stops forwarding at the cut point but cuts only once the server has
  finished the response (for servers that must not be producing events while the
  client reconnects; see ``tests/integration/test_resumption.py``).

A cut closes the whole connection, so it kills whatever the connection carries. An
optional *intercept* answers chosen requests from the proxy itself, without the server
(e.g. an SSE stream that ends at once). The proxy counts what it did (``stats``,
``records``) so a test can assert that faults really happened.

In a test, run it in the test's event loop::

    async with FaultProxy(server.host, server.port, policy=random_cuts(rng, 200, 4000)) as proxy:
        ... use proxy.url ...

or in a child process (``python -m tests.rig.faultproxy --help``; it prints
``{"port": ..., "seed": ...}`` on its first stdout line, and its stats when stdin closes or
on SIGTERM), when the proxy's own memory or CPU must stay out of the measured process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

__all__ = [
    "Cut",
    "CutMode",
    "CutRecord",
    "Exchange",
    "FaultProxy",
    "FaultProxyProcess",
    "Intercept",
    "Policy",
    "ProxyStats",
    "Reply",
    "RequestHead",
    "random_cuts",
]

LOOPBACK = "127.0.0.1"
READ_SIZE = 65536
MAX_HEAD_BYTES = 65536
CLOSE_TIMEOUT = 5.0
"""Seconds a connection gets to flush and close before it is aborted."""

CutMode = Literal["fin", "rst"]


# -- what policies see and return ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request line and its headers (names lower-cased)."""

    method: str
    target: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One response about to be forwarded, with the request it answers."""

    connection: int
    """Number of the client connection (1, 2, ... in accept order)."""
    index: int
    """Number of this exchange on its connection (1 for the first)."""
    request: RequestHead | None
    status: int
    headers: Mapping[str, str]
    """Response headers, names lower-cased."""

    @property
    def method(self) -> str:
        return self.request.method if self.request else ""

    @property
    def is_sse(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    @property
    def last_event_id(self) -> str | None:
        """The request's ``Last-Event-ID`` (set on SSE resumptions)."""
        return self.request.headers.get("last-event-id") if self.request else None


@dataclass(frozen=True, slots=True)
class Cut:
    """Where to cut one response in the server-to-client direction (exactly one trigger)."""

    at_byte: int | None = None
    after_events: int | None = None
    mode: CutMode = "fin"
    hold: bool = False
    """Forward nothing past the cut point, but keep reading the server's response and cut
    only once it is complete (or the server closes): the server has then finished the
    answer before the client can notice the cut and reconnect."""

    def __post_init__(self) -> None:
        if (self.at_byte is None) == (self.after_events is None):
            raise ValueError("Cut needs exactly one of at_byte and after_events")
        if (self.at_byte is not None and self.at_byte < 0) or (
            self.after_events is not None and self.after_events < 1
        ):
            raise ValueError("Cut offsets must be at_byte >= 0 or after_events >= 1")
        if self.mode not in ("fin", "rst"):
            raise ValueError(f"Cut mode must be 'fin' or 'rst', not {self.mode!r}")


@dataclass(frozen=True, slots=True)
class Reply:
    """A response the proxy sends itself (``Content-Length`` is added)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    close: bool = False
    """Close the connection after the reply (``Connection: close``)."""

    def encode(self) -> bytes:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(self.status, "")
        lines = [f"HTTP/1.1 {self.status} {reason}".rstrip()]
        headers = {k.lower(): v for k, v in self.headers.items()}
        headers["content-length"] = str(len(self.body))
        if self.close:
            headers["connection"] = "close"
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


Policy = Callable[[Exchange], Cut | None]
"""Decides, per response, whether and where to cut. Called once per response head."""
Intercept = Callable[[RequestHead], Reply | None]
"""Answers a request itself (return a ``Reply``) or lets it through (``None``)."""


@dataclass(frozen=True, slots=True)
class CutRecord:
    """One cut that happened."""

    connection: int
    method: str
    status: int
    sse: bool
    body_bytes: int
    """Body bytes forwarded before the cut."""
    events: int
    """Complete SSE events forwarded before the cut (counted only for SSE bodies)."""
    mode: CutMode
    last_event_id: str | None


@dataclass(slots=True)
class ProxyStats:
    """Counters since the proxy started."""

    connections: int = 0
    responses: int = 0
    sse_responses: int = 0
    planned_cuts: int = 0
    """Responses the policy chose to cut (some end before their cut point)."""
    cuts: int = 0
    cuts_by_method: dict[str, int] = field(default_factory=dict)
    cuts_by_mode: dict[str, int] = field(default_factory=dict)
    intercepted: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "responses": self.responses,
            "sse_responses": self.sse_responses,
            "planned_cuts": self.planned_cuts,
            "cuts": self.cuts,
            "cuts_by_method": dict(self.cuts_by_method),
            "cuts_by_mode": dict(self.cuts_by_mode),
            "intercepted": self.intercepted,
        }


def random_cuts(
    rng: random.Random,
    min_byte: int,
    max_byte: int,
    *,
    probability: float = 1.0,
    modes: Sequence[CutMode] = ("fin", "rst"),
    methods: Sequence[str] = ("POST", "GET"),
    sse_only: bool = True,
    resumptions_only_for_get: bool = True,
    hold_methods: Sequence[str] = (),
) -> Policy:
    """A policy cutting responses at uniformly random body offsets in ``[min_byte, max_byte]``.

    Only SSE responses (``sse_only``) to the given methods are candidates, and of GETs only
    resumptions (with ``Last-Event-ID``) when ``resumptions_only_for_get``, so a client's
    listen stream is left alone. Each candidate is cut with ``probability``; the mode is
    drawn from ``modes``; responses to ``hold_methods`` get ``hold=True``. All draws come
    from ``rng`` (seed it, and log the seed).
    """
    if not 0 <= min_byte <= max_byte:
        raise ValueError("need 0 <= min_byte <= max_byte")
    if not modes:
        raise ValueError("need at least one cut mode")
    wanted = {m.upper() for m in methods}
    held = {m.upper() for m in hold_methods}

    def policy(exchange: Exchange) -> Cut | None:
        if sse_only and not exchange.is_sse:
            return None
        if exchange.method not in wanted:
            return None
        if exchange.method == "GET" and resumptions_only_for_get and exchange.last_event_id is None:
            return None
        if probability < 1.0 and rng.random() >= probability:
            return None
        return Cut(
            at_byte=rng.randint(min_byte, max_byte),
            mode=rng.choice(list(modes)),
            hold=exchange.method in held,
        )

    return policy


# -- HTTP/1.1 framing ----------------------------------------------------------------


@dataclass(slots=True)
class _Head:
    raw: bytes
    start_line: str
    headers: dict[str, str]

    @property
    def status(self) -> int:
        parts = self.start_line.split(" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def request(self) -> RequestHead:
        method, _, rest = self.start_line.partition(" ")
        return RequestHead(method.upper(), rest.rpartition(" ")[0] or rest, self.headers)


@dataclass(slots=True)
class _Piece:
    kind: Literal["head", "framing", "data", "end"]
    raw: bytes = b""
    head: _Head | None = None


class FramingError(Exception):
    """The bytes are not HTTP/1.1 this proxy understands."""


class _Framer:
    """Splits one direction of an HTTP/1.1 connection into heads, body pieces and ends.

    ``data`` pieces are body content (chunk payloads, or the raw body); ``framing`` pieces
    are chunk sizes, CRLFs and trailers. Concatenating every piece's ``raw`` gives back
    exactly the bytes fed in.
    """

    def __init__(self, *, responses: bool) -> None:
        self.responses = responses
        self._buffer = b""
        self._state: Literal[
            "head", "length", "chunk_size", "chunk_data", "chunk_crlf", "trailer", "close"
        ] = "head"
        self._remaining = 0

    def feed(self, data: bytes) -> list[_Piece]:
        self._buffer += data
        pieces: list[_Piece] = []
        while self._buffer:
            progressed = self._step(pieces)
            if not progressed:
                break
        return pieces

    def _step(self, pieces: list[_Piece]) -> bool:
        buf = self._buffer
        state = self._state
        if state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise FramingError("message head too large")
                return False
            raw, self._buffer = buf[: end + 4], buf[end + 4 :]
            head = self._parse_head(raw)
            pieces.append(_Piece("head", raw, head))
            self._start_body(head, pieces)
            return True
        if state == "length":
            take = min(self._remaining, len(buf))
            pieces.append(_Piece("data", buf[:take]))
            self._buffer = buf[take:]
            self._remaining -= take
            if self._remaining == 0:
                self._end(pieces)
            return True
        if state == "close":
            pieces.append(_Piece("data", buf))
            self._buffer = b""
            return True
        if state in ("chunk_size", "trailer"):
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise FramingError("chunk line too long")
                return False
            line, self._buffer = buf[: end + 2], buf[end + 2 :]
            pieces.append(_Piece("framing", line))
            if state == "trailer":
                if line == b"\r\n":
                    self._end(pieces)
                return True
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise FramingError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                self._state = "trailer"
            else:
                self._state, self._remaining = "chunk_data", size
            return True
        if state == "chunk_data":
            take = min(self._remaining, len(buf))
            pieces.append(_Piece("data", buf[:take]))
            self._buffer = buf[take:]
            self._remaining -= take
            if self._remaining == 0:
                self._state = "chunk_crlf"
            return True
        # chunk_crlf
        if len(buf) < 2:
            return False
        if buf[:2] != b"\r\n":
            raise FramingError("chunk data not followed by CRLF")
        pieces.append(_Piece("framing", buf[:2]))
        self._buffer = buf[2:]
        self._state = "chunk_size"
        return True

    @staticmethod
    def _parse_head(raw: bytes) -> _Head:
        lines = raw.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise FramingError(f"bad header line {line[:40]!r}")
            headers[name.strip().lower()] = value.strip()
        return _Head(raw, lines[0], headers)

    def _start_body(self, head: _Head, pieces: list[_Piece]) -> None:
        headers = head.headers
        if self.responses and (head.status < 200 or head.status in (204, 304)):
            # 1xx: another head follows; 204/304: no body.
            if head.status >= 200:
                pieces.append(_Piece("end"))
            self._state = "head"
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "chunk_size"
            return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise FramingError(f"bad Content-Length {length!r}")
            self._remaining = int(length)
            if self._remaining == 0:
                self._end(pieces)
            else:
                self._state = "length"
            return
        if self.responses:
            self._state = "close"
        else:
            self._end(pieces)

    def _end(self, pieces: list[_Piece]) -> None:
        pieces.append(_Piece("end"))
        self._state = "head"


class _EventCounter:
    """Finds where SSE events end (a blank line after a field line) in a body fed piece
    by piece. Comment-only blocks (keep-alive pings) are not events."""

    def __init__(self) -> None:
        self.events = 0
        self._line_len = 0
        self._comment = False
        self._has_field = False
        self._after_cr = False
        self.pending_stop = False
        """An event ended on a CR at the end of the last piece: cut at the next byte."""

    def scan(self, data: bytes, stop_at: int | None) -> int | None:
        """Count the events that end in ``data``. When the count reaches ``stop_at``,
        return the offset just past the blank line that ended that event."""
        size = len(data)
        if self.pending_stop:
            # The last piece ended on the CR of the event's final CRLF: take its LF too.
            self.pending_stop = False
            self._after_cr = False
            return 1 if data[:1] == b"\n" else 0
        for i, byte in enumerate(data):
            if self._after_cr:
                self._after_cr = False
                if byte == 0x0A:  # the LF of a CRLF, handled with its CR
                    continue
            if byte in (0x0D, 0x0A):
                self._after_cr = byte == 0x0D
                if self._line_len == 0 and self._has_field:
                    self.events += 1
                    self._has_field = False
                    if stop_at is not None and self.events >= stop_at:
                        if byte == 0x0D and i + 1 == size:
                            self.pending_stop = True
                            return None
                        crlf = byte == 0x0D and data[i + 1 : i + 2] == b"\n"
                        return i + (2 if crlf else 1)
                self._line_len = 0
                self._comment = False
                continue
            if self._line_len == 0:
                self._comment = byte == 0x3A  # ':' starts a comment line
            if not self._comment:
                self._has_field = True
            self._line_len += 1
        return None


# -- the proxy -------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    cut: Cut
    exchange: Exchange
    body_bytes: int = 0
    counter: _EventCounter | None = None
    holding: bool = False


class _Connection:
    def __init__(
        self,
        number: int,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        self.number = number
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.upstream_reader = upstream_reader
        self.upstream_writer = upstream_writer
        self.requests: deque[RequestHead | None] = deque()
        self.exchanges = 0
        self.cut = False


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)


class FaultProxy:
    """The proxy: ``async with FaultProxy(host, port, policy=...) as proxy: proxy.url``."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        policy: Policy | None = None,
        intercept: Intercept | None = None,
        host: str = LOOPBACK,
        port: int = 0,
        max_records: int | None = 10_000,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.policy = policy
        self.intercept = intercept
        self.host = host
        self.port = port
        self.stats = ProxyStats()
        self.records: deque[CutRecord] = deque(maxlen=max_records)
        self.errors: list[str] = []
        """Framing errors seen (a healthy run has none)."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()

    # -- addresses ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint (``/mcp``) through the proxy."""
        return f"{self.base_url}/mcp"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FaultProxy is already running")
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        """Stop listening, abort every connection and wait for their tasks (bounded)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Aborting the sockets ends every pump; the connection tasks then finish normally.
        for conn in list(self._connections):
            conn.cut = True
            _abort(conn.client_writer)
            _abort(conn.upstream_writer)
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- per connection ----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only aclose() cancels these (after a bounded wait); asyncio would log it.
            _abort(writer)
        finally:
            self._tasks.discard(task)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.stats.connections += 1
        number = self.stats.connections
        # With no buffer allowance, drain() returns only once every byte reached the
        # kernel: a cut then lands exactly where it was planned.
        client_writer.transport.set_write_buffer_limits(0, 0)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(client_writer)
            return
        conn = _Connection(number, client_reader, client_writer, upstream_reader, upstream_writer)
        if self._server is None:  # closing: accepted while aclose() ran
            _abort(client_writer)
            _abort(upstream_writer)
            return
        self._connections.add(conn)
        to_server = asyncio.create_task(self._client_to_server(conn))
        to_client = asyncio.create_task(self._server_to_client(conn))
        try:
            await asyncio.wait({to_server, to_client}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_server, to_client):
                task.cancel()
            await asyncio.gather(to_server, to_client, return_exceptions=True)
            self._connections.discard(conn)
            if not conn.cut:
                for writer in (client_writer, upstream_writer):
                    if writer.is_closing():
                        continue
                    await _close(writer)

    async def _client_to_server(self, conn: _Connection) -> None:
        framer = _Framer(responses=False)
        dropping = False
        try:
            while True:
                data = await conn.client_reader.read(READ_SIZE)
                if not data:
                    return
                out: list[bytes] = []
                replies: list[Reply] = []
                for piece in framer.feed(data):
                    if piece.kind == "head":
                        assert piece.head is not None
                        request = piece.head.request()
                        reply = self.intercept(request) if self.intercept else None
                        dropping = reply is not None
                        if reply is not None:
                            self.stats.intercepted += 1
                            replies.append(reply)
                            continue
                        conn.requests.append(request)
                    if not dropping and piece.raw:
                        out.append(piece.raw)
                if out:
                    conn.upstream_writer.write(b"".join(out))
                    await conn.upstream_writer.drain()
                for reply in replies:
                    conn.client_writer.write(reply.encode())
                    await conn.client_writer.drain()
                    if reply.close:
                        return
        except FramingError as exc:
            self.errors.append(f"client->server on connection {conn.number}: {exc}")
        except (OSError, asyncio.IncompleteReadError):
            return

    async def _server_to_client(self, conn: _Connection) -> None:
        framer = _Framer(responses=True)
        plan: _Plan | None = None
        try:
            while True:
                data = await conn.upstream_reader.read(READ_SIZE)
                if not data:
                    return
                for piece in framer.feed(data):
                    if plan is not None and plan.holding:
                        # Past the cut point: swallow the rest, cut when it is complete.
                        if piece.kind == "end":
                            await self._cut(conn, plan)
                            return
                        continue
                    if piece.kind == "head":
                        assert piece.head is not None
                        plan = self._on_response(conn, piece.head)
                        conn.client_writer.write(piece.raw)
                        if (
                            plan is not None
                            and plan.cut.at_byte == 0
                            and await self._reached(conn, plan)
                        ):
                            return
                        continue
                    if piece.kind == "end":
                        plan = None
                        continue
                    if plan is None:
                        conn.client_writer.write(piece.raw)
                        continue
                    keep = self._bytes_before_cut(plan, piece)
                    if keep is None:
                        conn.client_writer.write(piece.raw)
                        plan.body_bytes += len(piece.raw)
                        continue
                    conn.client_writer.write(piece.raw[:keep])
                    plan.body_bytes += keep
                    if await self._reached(conn, plan):
                        return
                await conn.client_writer.drain()
            if plan is not None and plan.holding:
                await self._cut(conn, plan)  # the server closed: that ends the response too
        except FramingError as exc:
            self.errors.append(f"server->client on connection {conn.number}: {exc}")
        except (OSError, asyncio.IncompleteReadError):
            return

    async def _reached(self, conn: _Connection, plan: _Plan) -> bool:
        """The cut point is reached: cut now (``True``) or start holding (``False``)."""
        if plan.cut.hold:
            plan.holding = True
            await conn.client_writer.drain()
            return False
        await self._cut(conn, plan)
        return True

    def _on_response(self, conn: _Connection, head: _Head) -> _Plan | None:
        status = head.status
        if status < 200:
            return None
        request = conn.requests.popleft() if conn.requests else None
        conn.exchanges += 1
        exchange = Exchange(conn.number, conn.exchanges, request, status, head.headers)
        self.stats.responses += 1
        if exchange.is_sse:
            self.stats.sse_responses += 1
        cut = self.policy(exchange) if self.policy is not None else None
        if cut is None:
            return None
        self.stats.planned_cuts += 1
        counter = _EventCounter() if exchange.is_sse else None
        return _Plan(cut, exchange, counter=counter)

    @staticmethod
    def _bytes_before_cut(plan: _Plan, piece: _Piece) -> int | None:
        """How many bytes of ``piece`` go out before the cut (``None``: all, no cut yet)."""
        cut = plan.cut
        stop: int | None = None
        if cut.at_byte is not None:
            left = cut.at_byte - plan.body_bytes
            if left < len(piece.raw):
                stop = max(0, left)
        if plan.counter is not None and plan.counter.pending_stop and piece.kind != "data":
            return 0
        if plan.counter is not None and piece.kind == "data":
            # Always count (records report events), and stop there for after_events.
            limit = piece.raw if stop is None else piece.raw[:stop]
            end = plan.counter.scan(limit, cut.after_events)
            if end is not None:
                stop = end
        return stop

    async def _cut(self, conn: _Connection, plan: _Plan) -> None:
        conn.cut = True
        mode = plan.cut.mode
        exchange = plan.exchange
        with contextlib.suppress(OSError):
            await asyncio.wait_for(conn.client_writer.drain(), CLOSE_TIMEOUT)
        self.stats.cuts += 1
        method = exchange.method or "?"
        self.stats.cuts_by_method[method] = self.stats.cuts_by_method.get(method, 0) + 1
        self.stats.cuts_by_mode[mode] = self.stats.cuts_by_mode.get(mode, 0) + 1
        self.records.append(
            CutRecord(
                connection=conn.number,
                method=method,
                status=exchange.status,
                sse=exchange.is_sse,
                body_bytes=plan.body_bytes,
                events=plan.counter.events if plan.counter else 0,
                mode=mode,
                last_event_id=exchange.last_event_id,
            )
        )
        if mode == "rst":
            _abort(conn.client_writer)
            _abort(conn.upstream_writer)
            return
        await asyncio.gather(_close(conn.client_writer), _close(conn.upstream_writer))


# -- running it as a process -----------------------------------------------------------


class FaultProxyProcess:
    """The proxy in a child process (``python -m tests.rig.faultproxy``), for measurements
    that must not include the proxy's own memory or CPU. ``args`` are CLI options.

    ``stop()`` closes the child's stdin (it then shuts down) and returns its final stats.
    """

    def __init__(self, upstream_host: str, upstream_port: int, args: Sequence[str] = ()) -> None:
        self.upstream = f"{upstream_host}:{upstream_port}"
        self.args = list(args)
        self.port = 0
        self.seed: int | None = None
        self.final: dict[str, object] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/mcp"

    def start(self, timeout: float = 10.0) -> Self:
        repo_root = Path(__file__).resolve().parents[2]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.rig.faultproxy", "--upstream", self.upstream, *self.args],
            cwd=repo_root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        ready = selectors.DefaultSelector()
        ready.register(self._proc.stdout, selectors.EVENT_READ)
        if not ready.select(timeout):
            self.stop()
            raise RuntimeError(f"fault proxy did not report its port within {timeout}s")
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait(timeout)
            raise RuntimeError(f"fault proxy exited with {code} before it was ready")
        hello = json.loads(line)
        self.port, self.seed = int(hello["port"]), int(hello["seed"])
        return self

    def stop(self, timeout: float = 10.0) -> dict[str, object]:
        """Stop the child (bounded; killed if it does not exit) and return its stats."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.final
        try:
            out, _ = proc.communicate(input=b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=timeout)
        for line in out.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                self.final = json.loads(line)
        return self.final

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.rig.faultproxy",
        description="Fault-injecting HTTP/1.1 proxy on loopback: cuts SSE responses.",
    )
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument("--min-byte", type=int, default=0)
    parser.add_argument("--max-byte", type=int, default=4096)
    parser.add_argument(
        "--after-events",
        type=int,
        default=None,
        help="cut after this many SSE events instead of at a random byte",
    )
    parser.add_argument("--probability", type=float, default=1.0)
    parser.add_argument("--modes", default="fin,rst", help="comma-separated: fin, rst")
    parser.add_argument("--methods", default="POST,GET", help="comma-separated HTTP methods")
    parser.add_argument(
        "--hold-methods",
        default="",
        help="comma-separated methods whose cuts wait until the server finished the response",
    )
    return parser.parse_args(argv)


def _policy_from_args(args: argparse.Namespace, rng: random.Random) -> Policy:
    modes: list[CutMode] = []
    for mode in args.modes.split(","):
        if mode not in ("fin", "rst"):
            raise SystemExit(f"unknown cut mode {mode!r}")
        modes.append(mode)
    methods = [m.strip().upper() for m in args.methods.split(",") if m.strip()]
    hold_methods = [m.strip().upper() for m in args.hold_methods.split(",") if m.strip()]
    byte_policy = random_cuts(
        rng,
        args.min_byte,
        args.max_byte,
        probability=args.probability,
        modes=modes,
        methods=methods,
        hold_methods=hold_methods,
    )
    if args.after_events is None:
        return byte_policy
    after = int(args.after_events)

    def by_events(exchange: Exchange) -> Cut | None:
        cut = byte_policy(exchange)
        return None if cut is None else Cut(after_events=after, mode=cut.mode, hold=cut.hold)

    return by_events


async def _run(args: argparse.Namespace) -> None:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    host, _, port = args.upstream.rpartition(":")
    proxy = FaultProxy(
        host or LOOPBACK, int(port), policy=_policy_from_args(args, random.Random(seed))
    )
    await proxy.start()
    print(json.dumps({"port": proxy.port, "seed": seed}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:
        # Also stop when the parent closes our stdin (or dies): no orphaned proxies.
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    await stop.wait()
    await proxy.aclose()
    print(json.dumps({"stats": proxy.stats.as_dict(), "errors": proxy.errors}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(_run(_parse_args(argv)))


if __name__ == "__main__":
    main()
