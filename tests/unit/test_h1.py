"""Our own HTTP/1.1 connection (the lean path on plain HTTP) against a scripted raw server.

Each test's server reads one request at a time from a real loopback socket and writes
exactly the bytes the test gives it, split as the test says: framings, broken framings,
keep-alive and its races, flow control. What reaches the caller must be the body or one
of httpx's exception types, as on the httpcore and httpx paths.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpx
import pytest

from mcp_resilient._transports import CoreTransport, EndpointSlots
from mcp_resilient._transports._base import WireResponse

pytestmark = pytest.mark.anyio


@dataclass
class Scripted:
    """A loopback server: for request N (counted over all connections) it runs replies[N]."""

    replies: list[Callable[..., object]]
    url: str = ""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head + body


@asynccontextmanager
async def scripted(*replies: Callable[..., object]) -> AsyncIterator[Scripted]:
    state = Scripted(list(replies))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                state.requests.append(request)
                reply = state.replies[len(state.requests) - 1]
                result = reply(writer)
                if asyncio.iscoroutine(result):
                    await result
                if writer.is_closing():
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state.url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield state
    finally:
        server.close()


def send(data: bytes, *, close: bool = False) -> Callable[[asyncio.StreamWriter], object]:
    async def reply(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()

    return reply


def dribble(data: bytes) -> Callable[[asyncio.StreamWriter], object]:
    """The response one byte at a time: every parser state sees a split."""

    async def reply(writer: asyncio.StreamWriter) -> None:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)

    return reply


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    head += b"".join(h + b"\r\n" for h in extra)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    out = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for chunk in chunks:
        out += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


@asynccontextmanager
async def transport(url: str) -> AsyncIterator[CoreTransport]:
    core = CoreTransport([url], EndpointSlots(None))
    try:
        yield core
    finally:
        await core.aclose()


async def read(response: WireResponse) -> bytes:
    try:
        return b"".join([piece async for piece in response.aiter_raw()])
    finally:
        await response.aclose()


async def post(core: CoreTransport, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await core.send("POST", url, {"Content-Type": "application/json"}, body)
    return response.status_code, await read(response)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # our connection is asyncio's; trio goes through httpcore


async def test_content_length_bodies_reuse_one_connection() -> None:
    async with (
        scripted(send(ok(b'{"a":1}')), send(ok(b'{"b":2}'))) as server,
        transport(server.url) as core,
    ):
        assert await post(core, server.url) == (200, b'{"a":1}')
        assert await post(core, server.url) == (200, b'{"b":2}')
    assert server.connections == 1
    request = server.requests[0]
    assert request.startswith(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 2\r\n\r\n{}" in request


async def test_chunked_body_split_at_every_byte_with_trailers() -> None:
    data = chunked(b"event: message\r\n", b"data: {}\r\n\r\n", trailer=b"x-t: 1\r\n")
    async with scripted(dribble(data), send(ok(b"2"))) as server, transport(server.url) as core:
        assert await post(core, server.url) == (200, b"event: message\r\ndata: {}\r\n\r\n")
        assert await post(core, server.url) == (200, b"2")  # framing ended cleanly
    assert server.connections == 1


async def test_body_until_close_is_read_whole_and_never_reused() -> None:
    first = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"until": "close"}'
    async with (
        scripted(send(first, close=True), send(ok(b"2"))) as server,
        transport(server.url) as core,
    ):
        assert await post(core, server.url) == (200, b'{"until": "close"}')
        assert await post(core, server.url) == (200, b"2")
    assert server.connections == 2


async def test_connection_close_is_honoured() -> None:
    async with (
        scripted(send(ok(b"1", b"Connection: close")), send(ok(b"2"))) as server,
        transport(server.url) as core,
    ):
        assert await post(core, server.url) == (200, b"1")
        assert await post(core, server.url) == (200, b"2")
    assert server.connections == 2


async def test_informational_responses_are_skipped() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n" + ok(b"1")
    async with scripted(send(data)) as server, transport(server.url) as core:
        assert await post(core, server.url) == (200, b"1")


async def test_repeated_headers_are_joined_and_names_lowered() -> None:
    data = ok(b"1", b"X-Thing: a", b"x-thing: b", b"Mcp-Session-Id:  s1 ")
    async with scripted(send(data)) as server, transport(server.url) as core:
        response = await core.send("POST", server.url, {}, b"{}")
        assert response.headers["x-thing"] == "a, b"
        assert response.headers["mcp-session-id"] == "s1"
        await read(response)


async def test_disconnect_before_any_answer_is_httpcores_remote_protocol_error() -> None:
    async with scripted(send(b"", close=True)) as server, transport(server.url) as core:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await post(core, server.url)


async def test_disconnect_mid_body_says_how_much_came() -> None:
    data = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345"
    async with scripted(send(data, close=True)) as server, transport(server.url) as core:
        with pytest.raises(httpx.RemoteProtocolError, match="received 5 bytes, expected 10"):
            await post(core, server.url)


async def test_disconnect_mid_chunk_is_an_incomplete_body() -> None:
    data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nabc"
    async with scripted(send(data, close=True)) as server, transport(server.url) as core:
        with pytest.raises(httpx.RemoteProtocolError, match="peer closed"):
            await post(core, server.url)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", "head larger"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000, "head larger"),  # and no end in sight
        (b"HTP/1.1 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nx: 1\r\n folded\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n12", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"1" * 2000, "longer than"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabX\r\n", "CRLF"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
    ],
)
async def test_malformed_answers_are_remote_protocol_errors(data: bytes, message: str) -> None:
    async with scripted(send(data)) as server, transport(server.url) as core:
        with anyio.fail_after(10), pytest.raises(httpx.RemoteProtocolError, match=message):
            await post(core, server.url)


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\nb", "nul\0"])
async def test_header_injection_is_refused_before_sending(value: str) -> None:
    async with scripted(send(ok(b"1"))) as server, transport(server.url) as core:
        with pytest.raises(httpx.LocalProtocolError, match="CR, LF or NUL"):
            await core.send("POST", server.url, {"X-Value": value}, b"{}")
        assert await post(core, server.url) == (200, b"1")
    assert len(server.requests) == 1  # the refused request never reached the server


async def test_an_idle_connection_the_server_closed_is_replaced_unseen() -> None:
    async with (
        scripted(send(ok(b"1"), close=True), send(ok(b"2"))) as server,
        transport(server.url) as core,
    ):
        assert await post(core, server.url) == (200, b"1")
        # The server closed its side after answering (a keep-alive timeout, say): the
        # idle connection must not be used, whether or not the loop has seen the EOF.
        assert await post(core, server.url) == (200, b"2")
    assert server.connections == 2


async def test_a_large_body_streams_through_flow_control_intact() -> None:
    body = bytes(range(256)) * (4 * 4096)  # 4 MiB
    async with (
        scripted(send(ok(body)), send(ok(b"after"))) as server,
        transport(server.url) as core,
    ):
        response = await core.send("POST", server.url, {}, b"{}")
        received = bytearray()
        async for piece in response.aiter_raw():
            received += piece
            await asyncio.sleep(0)  # a slow reader: the socket must be paused, not drained
        await response.aclose()
        assert bytes(received) == body
        assert await post(core, server.url) == (200, b"after")
    assert server.connections == 1


async def test_a_large_request_body_is_sent_whole() -> None:
    payload = b"x" * (3 * 1024 * 1024)
    async with scripted(send(ok(b"1"))) as server, transport(server.url) as core:
        assert await post(core, server.url, payload) == (200, b"1")
    assert server.requests[0].endswith(payload)


async def test_a_body_abandoned_midway_closes_its_connection() -> None:
    never_ends = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    async with scripted(send(never_ends), send(ok(b"2"))) as server, transport(server.url) as core:
        response = await core.send("POST", server.url, {}, b"{}")
        pieces = response.aiter_raw()
        assert await pieces.__anext__() == b"first"
        with anyio.move_on_after(0.05):  # the caller's deadline ends the wait
            await pieces.__anext__()
        await response.aclose()
        assert await post(core, server.url) == (200, b"2")
    assert server.connections == 2  # the half-read connection was never reused


async def test_refused_connection_is_a_connect_error_worded_as_on_httpcore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wording reaches users (errors, the CLI, the docs' transcripts): it must not
    depend on which stack carried the request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    messages = []
    for stack in ("lean", "httpcore"):
        monkeypatch.setenv("MCP_RESILIENT_HTTP_PATH", stack)
        async with transport(url) as core:
            with pytest.raises(httpx.ConnectError) as info:
                await post(core, url)
        messages.append(str(info.value))
    assert messages[0] == messages[1] == "All connection attempts failed"


async def test_httpcore_path_is_chosen_by_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_RESILIENT_HTTP_PATH", "httpcore")
    async with scripted(send(ok(b"1"))) as server, transport(server.url) as core:
        assert await post(core, server.url) == (200, b"1")
        plain = next(iter(core._plain.values()))
        assert plain._idle and not plain._h1_idle  # httpcore's connection, kept idle


async def test_connections_past_descriptor_1024_are_still_reused() -> None:
    """At 10,000 in flight descriptors pass 1024, where select() cannot look."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"needs RLIMIT_NOFILE >= 1200 (hard limit {hard})")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        async with (
            scripted(send(ok(b"1")), send(ok(b"2"))) as server,
            transport(server.url) as core,
        ):
            assert await post(core, server.url) == (200, b"1")
            connection = next(iter(core._plain.values()))._h1_idle[0]
            assert connection._transport.get_extra_info("socket").fileno() > 1024
            assert await post(core, server.url) == (200, b"2")
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert server.connections == 1
