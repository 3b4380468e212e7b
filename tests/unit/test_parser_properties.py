"""Properties of the SSE parser, the body decoder and the JSON-RPC decoder, over any bytes.

Whatever a server sends, and however the network chunks it: only typed errors come out,
memory stays bounded by the cap, and the same events come out of every chunking.
"""

from __future__ import annotations

import gzip
import itertools
import json
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_resilient import MCPError, ProtocolError
from mcp_resilient._sse import SSEParser
from mcp_resilient._transports import HTTPWire, StreamCursor
from mcp_resilient._transports._http import _decode_message

FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Pieces that make SSE interesting: field names, every line ending, a BOM, bad UTF-8, NUL.
TOKENS = st.sampled_from(
    [
        b"data:",
        b"data: ",
        b"id: ",
        b"id:",
        b"event: ",
        b"retry: ",
        b"retry: 10",
        b":",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b"x",
        b"{}",
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xe2\x82",
        b"\0",
        b"7",
        b" ",
        b'{"jsonrpc": "2.0", "method": "m"}',
        b'{"jsonrpc": "2.0", "id": 1, "result": {}}',
    ]
)
# Well-formed-looking lines with every line ending, blank lines among them.
LINES = st.lists(
    st.tuples(
        st.sampled_from([b"data", b"id", b"event", b"retry", b"", b": note", b"other"]),
        st.sampled_from([b":", b": ", b""]),
        st.one_of(st.sampled_from([b"x", b"7", b"{}", b"\xc3\xa9", b""]), st.binary(max_size=6)),
        st.sampled_from([b"\n", b"\r", b"\r\n"]),
    ).map(b"".join),
    max_size=25,
).map(b"".join)
SSE_BYTES = st.one_of(
    LINES,
    st.lists(st.one_of(TOKENS, st.binary(max_size=8)), max_size=60).map(b"".join),
    st.binary(max_size=300),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def parse(chunks: list[bytes], cap: int) -> tuple[list[tuple[Any, ...]], str | None]:
    """The events (as tuples) and the error, if any; asserts the memory bound as it goes."""
    parser = SSEParser(cap, endpoint="http://127.0.0.1:9/mcp")
    events: list[tuple[Any, ...]] = []
    error: MCPError | None = None
    try:
        for chunk in chunks:
            for event in parser.feed(chunk):
                events.append((event.event, event.data, event.id, event.retry))
            assert parser.buffered_bytes <= cap
    except MCPError as exc:
        error = exc
    if error is None:
        return events, None
    assert error.endpoint == "http://127.0.0.1:9/mcp"
    return events, type(error).__name__


@FAST
@given(
    data=SSE_BYTES, cuts=st.lists(st.integers(min_value=0), max_size=12), cap=st.integers(8, 200)
)
def test_sse_events_do_not_depend_on_chunking(data: bytes, cuts: list[int], cap: int) -> None:
    whole = parse([data], cap)
    assert parse(split(data, cuts), cap) == whole
    assert parse([data[i : i + 1] for i in range(len(data))], cap) == whole


@FAST
@given(data=SSE_BYTES)
def test_sse_ids_are_only_those_sent_on_the_event(data: bytes) -> None:
    events, _ = parse([data], 10_000)
    for _event, _data, event_id, _retry in events:
        assert "\0" not in event_id
    # An event's id comes from an `id:` line of that very block.
    if b"id" not in data:
        assert all(event_id == "" for _, _, event_id, _ in events)


CR, LF = "\r", "\n"
ENDING = st.sampled_from(["\n", "\r", "\r\n"])


@FAST
@given(
    events=st.lists(
        st.tuples(
            st.text(
                st.characters(exclude_categories=["Cs"], exclude_characters=CR + LF), max_size=40
            ),
            ENDING,
            ENDING,
        ),
        max_size=40,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_small_events_are_never_refused_however_chunked(
    events: list[tuple[str, str, str]], cuts: list[int]
) -> None:
    """Many events under the cap, any line endings: all arrive, none trips the guard."""
    # (A CR then an LF would be one CRLF line ending, not a line ending and a blank line.)
    data = "".join(
        "data: " + text + end + (CR if (end, blank) == (CR, LF) else blank)
        for text, end, blank in events
    ).encode()
    cap = 4 * 40 + 6  # one event at most: 40 characters of up to 4 bytes, plus "data: "
    got, error = parse(split(data, cuts), cap)
    assert error is None
    assert [event[1] for event in got] == [text for text, _, _ in events]


def test_the_parser_holds_no_more_than_the_cap() -> None:
    cap = 1024 * 1024
    line = b"x" * 65536
    tracemalloc.start()
    try:
        parser = SSEParser(cap)
        fed = 0
        try:
            for _ in range(1024):  # 64 MiB of one line
                for _event in parser.feed(line):
                    pass
                fed += len(line)
        except MCPError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fed <= cap
    assert peak < 4 * cap


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=10,
)


@FAST
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.integers(1, 200_000).map(lambda n: "[" * n),
        st.integers(1, 200_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
        JSONISH.map(lambda v: json.dumps({"jsonrpc": "2.0", "id": 1, "result": v})),
    )
)
def test_the_jsonrpc_decoder_returns_a_message_or_a_typed_error(raw: str | bytes) -> None:
    message: Any = None
    error: ProtocolError | None = None
    try:
        message = _decode_message(raw, endpoint="http://127.0.0.1:9/mcp", session_id=None)
    except ProtocolError as exc:
        error = exc
    if error is not None:
        assert error.endpoint == "http://127.0.0.1:9/mcp"
    else:
        assert isinstance(message, dict)
        assert message["jsonrpc"] == "2.0"


# -- the whole wire: compressed bytes in, JSON-RPC messages out ------------------------


HTTP = httpx.AsyncClient()  # never sends: the wire only reads the responses given to it


def wire_messages(
    chunks: list[bytes], encoding: str | None, cap: int
) -> tuple[list[Any], str | None]:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    headers = {"content-type": "text/event-stream"}
    if encoding:
        headers["content-encoding"] = encoding
    response = httpx.Response(200, headers=headers, content=body())
    wire = HTTPWire(HTTP, "http://127.0.0.1:9/mcp", max_message_bytes=cap)
    out: list[Any] = []

    async def read() -> str | None:
        try:
            async for message in wire._read_sse(response, None, StreamCursor()):
                out.append(message)
        except MCPError as exc:
            return type(exc).__name__
        return None

    return out, anyio.run(read)


@FAST
@given(
    data=SSE_BYTES,
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    layers=st.integers(0, 2),
    garbage=st.booleans(),
)
def test_the_wire_gives_the_same_messages_however_the_body_is_chunked(
    data: bytes, cuts: list[int], layers: int, garbage: bool
) -> None:
    body = data
    for _ in range(layers):
        body = gzip.compress(body, 1)
    if garbage and layers:
        body = body[: len(body) // 2] + b"\x00garbage" + body[len(body) // 2 :]
    encoding = ", ".join(["gzip"] * layers) or None
    whole = wire_messages([body], encoding, 512)
    chunked = wire_messages(split(body, cuts), encoding, 512)
    if garbage:
        # zlib drops the output of a step that fails, so only the outcome's type is fixed.
        assert whole[1] in (None, "ProtocolError", "EventTooLargeError")
        assert chunked[1] in (None, "ProtocolError", "EventTooLargeError")
    else:
        assert chunked == whole
        assert whole == wire_messages([data], None, 512)
