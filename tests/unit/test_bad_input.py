"""Bad input from a server gives a typed error within the deadline; the client stays usable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from mcp_resilient import (
    NO_RETRY,
    EventTooLargeError,
    OutcomeUnknownError,
    ProtocolError,
    RequestTimeoutError,
    ResilientClient,
    StreamEndedError,
)

from .conftest import URL, FakeServer, rpc_result, sse_event, sse_response

pytestmark = pytest.mark.anyio

CAP = 64 * 1024


def only_for(tool: str, answer: Callable[[dict[str, Any]], httpx.Response]) -> Any:
    """Answer ``tools/call`` of ``tool`` badly and every other call normally."""

    def route(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if body["params"]["name"] == tool:
            return answer(body)
        return rpc_result(body["id"], {"content": [{"type": "text", "text": "fine"}]})

    return route


async def call_bad_then_good(
    server: FakeServer, expected: type[Exception], match: str, cause: type[Exception] | None = None
) -> None:
    async with ResilientClient(URL, listen=False, max_event_bytes=CAP, timeout=5) as client:
        with anyio.fail_after(10), pytest.raises(expected, match=match) as info:
            await client.call_tool("bad")
        assert info.value.endpoint == URL  # type: ignore[attr-defined]
        if cause is not None:
            assert isinstance(info.value.__cause__, cause)
        good = await client.call_tool("good")
        assert good.content[0].text == "fine"  # type: ignore[union-attr]


async def test_malformed_json(server: FakeServer) -> None:
    server.on(
        "tools/call",
        only_for(
            "bad",
            lambda b: httpx.Response(
                200,
                content=b'{"jsonrpc": "2.0", "id": }',
                headers={"content-type": "application/json"},
            ),
        ),
    )
    await call_bad_then_good(server, ProtocolError, "malformed JSON")


async def test_malformed_json_in_sse_event(server: FakeServer) -> None:
    server.on("tools/call", only_for("bad", lambda b: sse_response(sse_event("{not json", id="1"))))
    await call_bad_then_good(server, ProtocolError, "malformed JSON")


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'{"hello": "world"}', b'"just a string"', b'{"jsonrpc": "1.0", "id": 1}']
)
async def test_body_that_is_not_jsonrpc(server: FakeServer, body: bytes) -> None:
    server.on(
        "tools/call",
        only_for(
            "bad",
            lambda b: httpx.Response(
                200, content=body, headers={"content-type": "application/json"}
            ),
        ),
    )
    await call_bad_then_good(server, ProtocolError, "not one JSON-RPC 2.0 message")


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", ""])
async def test_wrong_content_type(server: FakeServer, content_type: str) -> None:
    server.on(
        "tools/call",
        only_for(
            "bad",
            lambda b: httpx.Response(
                200, content=b"<html>hi</html>", headers={"content-type": content_type}
            ),
        ),
    )
    await call_bad_then_good(server, ProtocolError, "content type")


async def test_oversized_sse_event_is_cut_off_without_buffering_it_all(server: FakeServer) -> None:
    sent = 0

    async def endless_line() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"id: 1\ndata: "
        for _ in range(10_000):  # 80 MB if nobody stops us
            sent += 8192
            yield b"x" * 8192

    server.on("tools/call", only_for("bad", lambda b: sse_response(chunks=endless_line())))
    await call_bad_then_good(server, EventTooLargeError, "larger than the 65536-byte cap")
    assert sent < 4 * CAP, f"client read {sent} bytes before giving up"


async def test_oversized_json_body(server: FakeServer) -> None:
    big = b'{"jsonrpc": "2.0", "id": 1, "result": {"x": "' + b"y" * (2 * CAP) + b'"}}'
    server.on(
        "tools/call",
        only_for(
            "bad",
            lambda b: httpx.Response(
                200, content=big, headers={"content-type": "application/json"}
            ),
        ),
    )
    await call_bad_then_good(server, ProtocolError, "exceeds the 65536-byte cap")


async def test_response_id_that_matches_nothing_json(server: FakeServer) -> None:
    server.on("tools/call", only_for("bad", lambda b: rpc_result(99999, {"content": []})))
    await call_bad_then_good(server, ProtocolError, "does not carry its response")


async def test_response_id_that_matches_nothing_sse(server: FakeServer) -> None:
    server.on(
        "tools/call",
        only_for(
            "bad",
            lambda b: sse_response(
                sse_event({"jsonrpc": "2.0", "id": "nope", "result": {}}, id="1")
            ),
        ),
    )
    # The request went out and its answer is lost: not safe to re-send a plain tool call.
    await call_bad_then_good(
        server, OutcomeUnknownError, "ended without a response", StreamEndedError
    )


async def test_stream_that_ends_without_response(server: FakeServer) -> None:
    progress = {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": 0, "progress": 1},
    }
    server.on(
        "tools/call",
        only_for("bad", lambda b: sse_response(sse_event(id="p"), sse_event(progress, id="1"))),
    )
    # The request went out and its answer is lost: not safe to re-send a plain tool call.
    await call_bad_then_good(
        server, OutcomeUnknownError, "ended without a response", StreamEndedError
    )


async def test_result_that_does_not_validate(server: FakeServer) -> None:
    server.on(
        "tools/call", only_for("bad", lambda b: rpc_result(b["id"], {"content": "not a list"}))
    )
    await call_bad_then_good(server, ProtocolError, "invalid tools/call result")


async def test_response_without_result_or_error(server: FakeServer) -> None:
    server.on(
        "tools/call",
        only_for("bad", lambda b: httpx.Response(200, json={"jsonrpc": "2.0", "id": b["id"]})),
    )
    await call_bad_then_good(server, ProtocolError, "no result object")


async def test_202_to_a_request(server: FakeServer) -> None:
    server.on("tools/call", only_for("bad", lambda b: httpx.Response(202)))
    await call_bad_then_good(server, ProtocolError, "202 Accepted")


async def test_server_that_never_answers(server: FakeServer) -> None:
    async def route(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if body["params"]["name"] == "bad":
            await anyio.sleep_forever()
        return rpc_result(body["id"], {"content": [{"type": "text", "text": "fine"}]})

    server.on("tools/call", route)
    async with ResilientClient(URL, listen=False, timeout=0.3) as client:
        with (
            anyio.fail_after(10),
            pytest.raises(RequestTimeoutError, match="did not complete within 0.3 s"),
        ):
            await client.call_tool("bad")
        assert (await client.call_tool("good")).content[0].text == "fine"  # type: ignore[union-attr]


async def test_stream_that_stalls_after_some_events(server: FakeServer) -> None:
    async def stall() -> AsyncIterator[bytes]:
        yield sse_event(id="1").encode()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    server.on("tools/call", only_for("bad", lambda b: sse_response(chunks=stall())))
    async with ResilientClient(URL, listen=False, timeout=0.3) as client:
        with anyio.fail_after(10), pytest.raises(RequestTimeoutError):
            await client.call_tool("bad")
        assert (await client.call_tool("good")).content[0].text == "fine"  # type: ignore[union-attr]


async def test_http_error_status_is_typed_and_keeps_the_detail(server: FakeServer) -> None:
    from mcp_resilient import HTTPStatusError

    server.on(
        "tools/call",
        only_for(
            "bad", lambda b: httpx.Response(503, headers={"retry-after": "2"}, text="overloaded")
        ),
    )
    async with ResilientClient(URL, listen=False, retry=NO_RETRY) as client:
        with pytest.raises(HTTPStatusError) as info:
            await client.call_tool("bad")
        assert info.value.status_code == 503
        assert info.value.retry_after == 2.0
        assert info.value.body == "overloaded"
        assert "retry later" in str(info.value)
        assert (await client.call_tool("good")).content[0].text == "fine"  # type: ignore[union-attr]


async def test_connection_refused_is_a_connect_error() -> None:
    from mcp_resilient import ConnectError, RetryPolicy

    # Port 9 on loopback: nothing listens there in the test environment.
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01)
    with (
        anyio.fail_after(15),
        pytest.raises(ConnectError, match="could not open a session after 2 attempts"),
    ):
        async with ResilientClient("http://127.0.0.1:9/mcp", timeout=5, retry=policy):
            pass


async def test_garbage_on_the_listen_stream_does_not_break_calls(server: FakeServer) -> None:
    served = anyio.Event()

    def on_get(request: httpx.Request) -> httpx.Response:
        if served.is_set():
            return httpx.Response(405)
        served.set()
        return sse_response(sse_event("{{{{", id="g1"))

    server.get_answer = on_get
    async with ResilientClient(URL) as client:
        with anyio.fail_after(5):
            await served.wait()
        assert (await client.call_tool("add", {"a": 1})).structured_content == {"result": 1}
