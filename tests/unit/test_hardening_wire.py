"""Hostile bytes between HTTP and JSON-RPC: typed errors, bounded memory, no misfires.

Issue 9, the wire points: raw library exceptions (bad gzip, deep nesting, unsafe event
ids, absurd ``Retry-After`` dates, redirects) must become typed errors; compression must
not bypass the size cap; event ids are capped in length; the SSE size guard must count
the current event whatever the line endings and chunking; replays are judged by the id
on each event, not the last id carried forward.
"""

from __future__ import annotations

import functools
import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
import respx

from mcp_resilient import (
    NO_RETRY,
    EventTooLargeError,
    HTTPStatusError,
    MCPError,
    OutcomeUnknownError,
    ProtocolError,
    ResilientClient,
    StreamEndedError,
)
from mcp_resilient._transports import HTTPWire
from mcp_resilient._transports._http import _retry_after

from .conftest import URL, FakeServer, rpc_result, sse_event, sse_response, wire_transport
from .test_bad_input import CAP, call_bad_then_good, only_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.usefixtures("http_path"),  # every test on both transport paths
]

MiB = 1024 * 1024


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, 1)


@functools.cache
def bomb(prefix: bytes, layers: int = 2, size: int = 1024 * MiB) -> bytes:
    """``prefix`` followed by ``size`` NUL bytes, gzipped ``layers`` times (1 GiB: ~12 kB)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = b"\0" * MiB
    body = b"".join(
        [packer.compress(prefix), *(packer.compress(zeros) for _ in range(size // MiB))]
    )
    body += packer.flush()
    for _ in range(layers - 1):
        body = gzip.compress(body, 9)
    return body


def encoded(body: bytes, encoding: str, content_type: str) -> httpx.Response:
    """A response whose body is sent as is (httpx would decode a bytes body right away)."""

    async def stream() -> AsyncIterator[bytes]:
        yield body

    return httpx.Response(
        200, content=stream(), headers={"content-type": content_type, "content-encoding": encoding}
    )


async def peak_while(action: Callable[[], Awaitable[Any]]) -> int:
    """Peak traced allocation (bytes) while ``action`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        await action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_typed(exc: BaseException) -> None:
    assert isinstance(exc, MCPError), repr(exc)
    assert exc.endpoint, exc


# -- point 1: raw exceptions become typed ----------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/event-stream"])
async def test_gzip_header_on_a_body_that_is_not_gzip(
    server: FakeServer, content_type: str
) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "result": {}}'
    if content_type == "text/event-stream":
        body = b"data: " + body + b"\n\n"
    server.on("tools/call", only_for("bad", lambda b: encoded(body, "gzip", content_type)))
    await call_bad_then_good(server, ProtocolError, "not valid gzip")


@pytest.mark.parametrize("sse", [False, True])
async def test_deeply_nested_json_is_a_protocol_error(server: FakeServer, sse: bool) -> None:
    deep = "[" * 50_000 + "]" * 50_000

    def answer(body: dict[str, Any]) -> httpx.Response:
        text = f'{{"jsonrpc": "2.0", "id": {body["id"]}, "result": {deep}}}'
        if sse:
            return sse_response(sse_event(text, id="1"))
        return httpx.Response(200, content=text, headers={"content-type": "application/json"})

    server.on("tools/call", only_for("bad", answer))
    async with ResilientClient(URL, listen=False, timeout=5) as client:
        with anyio.fail_after(10), pytest.raises(MCPError) as info:
            await client.call_tool("bad")
        assert_typed(info.value)
        assert "nested too deeply" in str(info.value)
        assert (await client.call_tool("good")).content[0].text == "fine"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad_id", ["é-1", "a\x01b", "tab\there", "x\x7f"])
async def test_unsafe_event_id_is_never_sent_as_last_event_id(
    server: FakeServer, bad_id: str
) -> None:
    """The listen stream: a safe id, then an unsafe one, then the stream ends."""
    gets: list[httpx.Request] = []
    second = anyio.Event()

    def on_get(request: httpx.Request) -> httpx.Response:
        gets.append(request)
        if len(gets) == 1:
            return sse_response(sse_event(id="safe-1"), sse_event(id=bad_id))
        second.set()
        return httpx.Response(405)

    server.get_answer = on_get
    async with ResilientClient(URL, timeout=5) as client:
        with anyio.fail_after(60):
            await second.wait()
        # The background stream survived and the caller's code was never cancelled.
        assert (await client.call_tool("add", {"a": 2})).structured_content == {"result": 2}
    assert gets[1].headers["last-event-id"] == "safe-1"


async def test_unsafe_event_id_on_a_post_answer_gives_a_typed_error(server: FakeServer) -> None:
    # A priming event whose id cannot go into a header, then the stream ends: it cannot be
    # resumed, and the caller hears so in a typed error instead of a UnicodeEncodeError.
    server.on("tools/call", only_for("bad", lambda b: sse_response(sse_event(id="ünï"))))
    await call_bad_then_good(server, OutcomeUnknownError, "cannot be resumed", StreamEndedError)


@pytest.mark.parametrize(
    "value",
    [
        "Fri, 31 Dec 9999999999999999999999 23:59:59 GMT",
        "Fri, 31 Dec 99999 23:59:59 GMT",
        "1e999",
        "nan",
        "-inf",
        "Sun, 06 Nov 1994 08:49:37 -0000",
    ],
)
async def test_absurd_retry_after_is_ignored(server: FakeServer, value: str) -> None:
    assert _retry_after(httpx.Response(503, headers={"retry-after": value})) is None
    server.on(
        "tools/call",
        only_for("bad", lambda b: httpx.Response(503, headers={"retry-after": value})),
    )
    async with ResilientClient(URL, listen=False, retry=NO_RETRY) as client:
        with pytest.raises(HTTPStatusError) as info:
            await client.call_tool("bad")
        assert info.value.status_code == 503
        retry_after = info.value.retry_after
        assert retry_after is None or 0 <= retry_after < 366 * 24 * 3600


async def test_deeply_nested_error_body_keeps_the_status(
    server: FakeServer, http_path: str
) -> None:
    # At the wire: what the era layer makes of the body is its own business.
    server.on("tools/call", lambda b, r: httpx.Response(400, content=b"[" * 1999))
    message = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "x"}}
    async with httpx.AsyncClient() as http:
        wire = HTTPWire(wire_transport(http_path, http, URL), URL, max_message_bytes=CAP)
        with pytest.raises(HTTPStatusError) as info:
            async for _ in wire.post(message, {}, session_id=None):
                pass
    assert info.value.status_code == 400
    assert info.value.body == "[" * 1999


async def test_deeply_nested_error_body_is_typed_through_the_client(server: FakeServer) -> None:
    # Through the whole client, in both eras: the era layer reads error bodies too.
    server.on("tools/call", lambda b, r: httpx.Response(400, content=b"[" * 1999))
    for version in ("2025-11-25", "auto"):
        async with ResilientClient(URL, timeout=5, protocol_version=version) as client:
            with pytest.raises(HTTPStatusError) as info:
                await client.call_tool("add", {"a": 1}, idempotent=False)
        assert info.value.status_code == 400


async def test_bad_gzip_on_the_listen_stream_does_not_cancel_the_caller(
    server: FakeServer,
) -> None:
    served = anyio.Event()

    def on_get(request: httpx.Request) -> httpx.Response:
        if served.is_set():
            return httpx.Response(405)
        served.set()
        return encoded(b"data: this is not gzip\n\n", "gzip", "text/event-stream")

    server.get_answer = on_get
    async with ResilientClient(URL, timeout=5) as client:
        with anyio.fail_after(5):
            await served.wait()
        for n in range(3):
            assert (await client.call_tool("add", {"a": n})).structured_content == {"result": n}


# -- point 2: decompression stays under the cap ---------------------------------------


async def test_requests_say_which_encodings_are_handled(server: FakeServer) -> None:
    async with ResilientClient(URL, listen=False) as client:
        await client.ping()
    for request in server.requests:
        assert request.headers["accept-encoding"] == "gzip, deflate"


BOMBS = {
    "json gzip,gzip": ("application/json", "gzip, gzip", 2),
    "json gzip": ("application/json", "gzip", 1),
    "sse gzip,gzip": ("text/event-stream", "gzip, gzip", 2),
    "sse x-gzip": ("text/event-stream", "x-gzip", 1),
}


@pytest.mark.parametrize("name", list(BOMBS))
async def test_a_compression_bomb_is_cut_off_at_the_cap(server: FakeServer, name: str) -> None:
    content_type, encoding, layers = BOMBS[name]
    if content_type == "application/json":
        prefix = b'{"jsonrpc": "2.0", "id": 1, "result": {"x": "'
    else:
        prefix = b"id: 1\ndata: "
    body = bomb(prefix, layers)
    assert len(body) < 5 * MiB  # expands to 1 GiB
    server.on("tools/call", only_for("bad", lambda b: encoded(body, encoding, content_type)))
    async with ResilientClient(URL, listen=False, max_event_bytes=CAP, timeout=10) as client:

        async def bad_call() -> None:
            with anyio.fail_after(20), pytest.raises(ProtocolError, match="cap") as info:
                await client.call_tool("bad")
            assert_typed(info.value)

        peak = await peak_while(bad_call)
        assert peak < 64 * MiB, f"peak traced memory {peak / MiB:.0f} MiB"
        assert (await client.call_tool("good")).content[0].text == "fine"  # type: ignore[union-attr]


async def test_deflate_both_flavours_decode(server: FakeServer) -> None:
    """Correct compressed answers still work: zlib-wrapped and raw deflate, and stacked."""
    message = {"jsonrpc": "2.0", "id": 0, "result": {"content": [{"type": "text", "text": "ok"}]}}

    def zlib_wrapped(data: bytes) -> bytes:
        return zlib.compress(data)

    def raw_deflate(data: bytes) -> bytes:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        return packer.compress(data) + packer.flush()

    codings: list[tuple[str, Callable[[bytes], bytes]]] = [
        ("deflate", zlib_wrapped),
        ("deflate", raw_deflate),
        ("gzip", gzip_bytes),
        ("identity", lambda data: data),
        ("gzip, deflate", lambda data: zlib_wrapped(gzip_bytes(data))),
        ("GZIP", gzip_bytes),
    ]

    def answering(sse: bool, encoding: str, pack: Callable[[bytes], bytes]) -> Any:
        def answer(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
            text = json.dumps({**message, "id": body["id"]})
            if sse:
                raw = sse_event(text, id="e1").encode()
                return encoded(pack(raw), encoding, "text/event-stream")
            return encoded(pack(text.encode()), encoding, "application/json")

        return answer

    for sse in (False, True):
        for encoding, pack in codings:
            server.on("tools/call", answering(sse, encoding, pack))
            async with ResilientClient(URL, listen=False) as client:
                result = await client.call_tool("add")
            assert result.content[0].text == "ok", (sse, encoding)  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip, gzip, gzip, gzip"])
async def test_encodings_not_asked_for_are_refused(server: FakeServer, encoding: str) -> None:
    server.on(
        "tools/call",
        only_for("bad", lambda b: encoded(b"whatever", encoding, "application/json")),
    )
    await call_bad_then_good(server, ProtocolError, "Content-Encoding")


# -- point 4: event ids are capped in length -------------------------------------------


async def test_long_event_ids_are_refused_before_they_pile_up(server: FakeServer) -> None:
    big = b"x" * MiB
    sent = 0

    async def events(rid: Any) -> AsyncIterator[bytes]:
        nonlocal sent
        for n in range(200):  # 200 MiB of ids if the client keeps them
            sent += 1
            yield b"id: "
            yield big
            yield f"-{n}\ndata: \n\n".encode()
        yield sse_event(rpc_result_body(rid), id="last").encode()

    server.on("tools/call", only_for("bad", lambda b: sse_response(chunks=events(b["id"]))))
    async with ResilientClient(URL, listen=False, timeout=10) as client:

        async def bad_call() -> None:
            with anyio.fail_after(20), pytest.raises(ProtocolError, match="event id") as info:
                await client.call_tool("bad")
            assert_typed(info.value)

        peak = await peak_while(bad_call)
        assert peak < 32 * MiB, f"peak traced memory {peak / MiB:.0f} MiB"
        assert sent < 5
        assert (await client.call_tool("good")).content[0].text == "fine"  # type: ignore[union-attr]


async def test_an_id_of_a_kilobyte_is_fine(server: FakeServer) -> None:
    long_id = "k" * 1024

    def answer(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return sse_response(sse_event(id=long_id), sse_event(rpc_result_body(body["id"])))

    server.on("tools/call", answer)
    async with ResilientClient(URL, listen=False) as client:
        assert (await client.call_tool("add")).content[0].text == "done"  # type: ignore[union-attr]


def rpc_result_body(rid: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "done"}]}}


# -- point 5: the size guard counts the current event ---------------------------------


PAD = "p" * 1000


def padded_note(n: int) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "method": "notifications/x-padding", "params": {"n": n, "pad": PAD}}
    )


SPLITS: dict[str, Callable[[str], list[bytes]]] = {
    # the blank line that ends an event arrives in its own chunk
    "lf, blank line alone": lambda note: [f"data: {note}\n".encode(), b"\n"],
    "crlf, blank line alone": lambda note: [f"data: {note}\r\n".encode(), b"\r\n"],
    "cr, blank line alone": lambda note: [f"data: {note}\r".encode(), b"\r"],
    # legal mixed endings in one chunk
    "lf then crlf": lambda note: [f"data: {note}\n\r\n".encode()],
    "cr then lf": lambda note: [f"data: {note}\r\n\n".encode()],
    "crlf split inside": lambda note: [f"data: {note}\r".encode(), b"\n\r", b"\n"],
    "one byte per chunk at the end": lambda note: [
        f"data: {note}".encode(),
        b"\r",
        b"\n",
        b"\r",
        b"\n",
    ],
}


@pytest.mark.parametrize("split", list(SPLITS))
async def test_many_small_events_never_trip_the_size_guard(server: FakeServer, split: str) -> None:
    count = 1_000  # ~1 MB in ~1 kB events, against a 64 KiB cap

    async def chunks(rid: Any) -> AsyncIterator[bytes]:
        for n in range(count):
            for chunk in SPLITS[split](padded_note(n)):
                yield chunk
        yield sse_event(rpc_result_body(rid)).encode()

    server.on("tools/call", lambda b, r: sse_response(chunks=chunks(b["id"])))
    async with ResilientClient(URL, listen=False, max_event_bytes=CAP, timeout=20) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("add")
    assert result.content[0].text == "done"  # type: ignore[union-attr]


async def test_the_guard_still_fires_on_an_event_of_many_small_lines(server: FakeServer) -> None:
    sent = 0

    async def lines() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100_000):  # 100 MB of one event, in 1 kB data lines
            sent += 1
            yield b"data: " + PAD.encode() + b"\r\n"

    server.on("tools/call", only_for("bad", lambda b: sse_response(chunks=lines())))
    await call_bad_then_good(server, EventTooLargeError, "larger than the 65536-byte cap")
    assert sent * 1000 < 4 * CAP


# -- point 6: replays are judged by the id on the event --------------------------------


@pytest.mark.parametrize("tool", ["add", "bad"])
async def test_an_id_less_response_after_a_primed_event_is_delivered(
    server: FakeServer, tool: str
) -> None:
    def answer(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return sse_response(
            sse_event(id="p1"),  # priming: an id and empty data
            sse_event(rpc_result_body(body["id"])),  # the response, without an id
        )

    server.on("tools/call", answer)
    async with ResilientClient(URL, listen=False, timeout=5) as client:
        with anyio.fail_after(10):
            result = await client.call_tool(tool)
    assert result.content[0].text == "done"  # type: ignore[union-attr]
    assert len(server.posts("tools/call")) == 1


async def test_a_real_replay_is_still_dropped(server: FakeServer) -> None:
    notes: list[Any] = []

    def answer(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        progress = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": body["params"]["_meta"]["progressToken"], "progress": 1},
        }
        return sse_response(
            sse_event(progress, id="e1"),
            sse_event(progress, id="e1"),  # the same event again
            sse_event(rpc_result_body(body["id"]), id="e2"),
        )

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(progress)

    server.on("tools/call", answer)
    async with ResilientClient(URL, listen=False) as client:
        await client.call_tool("add", progress_handler=on_progress)
    assert notes == [1]


# -- point 13: redirects are never followed --------------------------------------------

FIRST = "http://127.0.0.1:9/mcp"
OTHER = "http://localhost:9/mcp"


@pytest.mark.parametrize("target", [FIRST, OTHER])
async def test_redirects_are_not_followed_even_if_the_client_would(target: str) -> None:
    fake = FakeServer()
    fake.on(
        "tools/call",
        lambda b, r: httpx.Response(307, headers={"location": target}),
    )
    other: list[httpx.Request] = []

    def elsewhere(request: httpx.Request) -> httpx.Response:
        other.append(request)
        return rpc_result(1, {})

    with respx.mock(assert_all_called=False) as router:
        router.route(url=FIRST).mock(side_effect=fake)
        router.route(url=OTHER).mock(side_effect=elsewhere)
        async with (
            httpx.AsyncClient(follow_redirects=True) as http,
            ResilientClient(
                FIRST,
                listen=False,
                http_client=http,
                headers={"Authorization": "Bearer s3cret"},
                retry=NO_RETRY,
                timeout=5,
            ) as client,
        ):
            with anyio.fail_after(10), pytest.raises(HTTPStatusError) as info:
                await client.call_tool("add", {"a": 1})
    assert info.value.status_code == 307
    assert "Redirects are not followed" in str(info.value)
    assert other == [], "credentials went to another origin"
    assert len(fake.posts("tools/call")) == 1
