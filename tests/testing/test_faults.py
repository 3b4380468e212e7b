"""Every scripted fault, and its effect on the wire as a plain httpx client sees it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mcp_resilient.testing import MAX_DELAY_SECONDS, MockMCPServer, parse_sse

pytestmark = pytest.mark.anyio


@pytest.fixture
def counter(mcp_mock: MockMCPServer) -> MockMCPServer:
    """The mock with an ``increment`` tool (not idempotent) and a read-only ``peek``."""

    @mcp_mock.tool(destructive=False)
    def increment() -> int:
        mcp_mock.state["n"] = mcp_mock.state.get("n", 0) + 1
        return int(mcp_mock.state["n"])

    @mcp_mock.tool(read_only=True)
    def peek() -> int:
        return int(mcp_mock.state.get("n", 0))

    return mcp_mock


async def test_expire_session(wire: Any, counter: MockMCPServer) -> None:
    await wire.initialize()
    old = wire.session_id
    fault = counter.faults.expire_session(tool="increment")
    assert (await wire.call_tool("peek"))["result"]  # not targeted
    response = await wire.request("tools/call", {"name": "increment"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"
    assert fault.fired == 1 and fault.exhausted
    assert counter.calls_to("increment") == 0
    assert (await wire.request("ping")).status_code == 404  # gone for good
    await wire.initialize()  # a fresh initialize without the old id
    assert wire.session_id != old
    assert counter.requests_for("initialize")[-1].session_id is None
    assert (await wire.call_tool("increment"))["result"]["content"][0]["text"] == "1"
    assert counter.requests_for(tool="increment")[0].faults == ["expire_session"]


async def test_expire_session_now(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    assert mcp_mock.expire_session() == [wire.session_id]
    assert (await wire.request("tools/list")).status_code == 404


async def test_status_503_twice(wire: Any, counter: MockMCPServer) -> None:
    await wire.initialize()
    counter.faults.status(503, times=2)
    statuses = [
        (await wire.request("tools/call", {"name": "increment"})).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    assert counter.calls_to("increment") == 1  # a 503 never reaches the tool
    assert [r.status for r in counter.requests_for(tool="increment")] == [503, 503, 200]


async def test_status_429_retry_after_header(wire: Any, mcp_mock: MockMCPServer) -> None:
    mcp_mock.faults.status(429, retry_after=1, method="tools/list")
    await wire.initialize()
    response = await wire.request("tools/list")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.text == "429 Too Many Requests"
    custom = mcp_mock.faults.status(
        500, body='{"error": "boom"}', content_type="application/json", headers={"x-a": "b"}
    )
    response = await wire.request("tools/list")
    assert (response.status_code, response.json(), response.headers["x-a"]) == (
        500,
        {"error": "boom"},
        "b",
    )
    assert custom.fired == 1


async def test_connect_error_times(wire: Any, mcp_mock: MockMCPServer) -> None:
    mcp_mock.faults.connect_error(times=2)
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            await wire.initialize()
    assert (await wire.initialize()).status_code == 200
    attempts = mcp_mock.requests_for("initialize")
    assert [r.status for r in attempts] == [None, None, 200]
    assert attempts[0].faults == ["connect_error"]
    assert len(mcp_mock.sessions) == 1  # refused attempts created nothing


async def test_connect_timeout(wire: Any, mcp_mock: MockMCPServer) -> None:
    mcp_mock.faults.connect_error(error="timeout")
    with pytest.raises(httpx.ConnectTimeout):
        await wire.initialize()


async def test_take_down_refuses_every_connection(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    mcp_mock.take_down()
    with pytest.raises(httpx.ConnectError):
        await wire.request("ping")
    with pytest.raises(httpx.ConnectError):
        await wire.get()
    mcp_mock.bring_up()
    assert (await wire.call("ping"))["result"] == {}


async def test_delay(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    mcp_mock.faults.delay(0.01, method="ping")
    assert (await wire.call("ping"))["result"] == {}
    assert mcp_mock.requests.last.faults == ["delay"]


async def test_delay_beyond_the_read_timeout(wire: Any, counter: MockMCPServer) -> None:
    await wire.initialize()
    counter.faults.delay(5, tool="increment")  # the fake waits only the client's read timeout
    with pytest.raises(httpx.ReadTimeout):
        await wire.client.post(
            wire.url,
            json=wire.request_body("tools/call", {"name": "increment"}),
            headers=wire.headers(),
            timeout=httpx.Timeout(5, read=0.01),
        )
    assert counter.calls_to("increment") == 1  # a slow server still did the work
    assert counter.requests.last.status is None


def test_delay_is_bounded(mcp_mock: MockMCPServer) -> None:
    with pytest.raises(ValueError, match="between 0"):
        mcp_mock.faults.delay(MAX_DELAY_SECONDS + 1)
    with pytest.raises(ValueError, match="times"):
        mcp_mock.faults.status(503, times=0)
    with pytest.raises(ValueError, match="unknown garbage"):
        mcp_mock.faults.garbage("nonsense")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        ("disconnect", httpx.RemoteProtocolError),
        ("read_error", httpx.ReadError),
        ("read_timeout", httpx.ReadTimeout),
    ],
)
async def test_lose_response(
    wire: Any, counter: MockMCPServer, error: Any, exception: type[Exception]
) -> None:
    await wire.initialize()
    counter.faults.lose_response(method="tools/call", error=error)
    with pytest.raises(exception):
        await wire.request("tools/call", {"name": "increment"})
    assert counter.calls_to("increment") == 1  # the effect happened
    assert counter.state["n"] == 1
    lost = counter.requests.last
    assert (lost.status, lost.faults) == (None, ["lose_response"])
    again = await wire.call_tool("increment")  # a blind retry runs it twice
    assert again["result"]["content"][0]["text"] == "2"


@pytest.mark.mcp_mock(response_mode="json")
@pytest.mark.parametrize(
    "kind",
    [
        "bad_json",
        "not_jsonrpc",
        "wrong_id",
        "empty_body",
        "wrong_content_type",
        "no_content_type",
        "accepted",
        "sse_bad_json",
        "sse_comments_only",
        "huge_event",
    ],
)
async def test_garbage(wire: Any, counter: MockMCPServer, kind: Any) -> None:
    await wire.initialize()
    counter.faults.garbage(kind, tool="increment", size=1000)
    response = await wire.request("tools/call", {"name": "increment"})
    assert counter.calls_to("increment") == 1  # garbage comes after the work
    content_type = response.headers.get("content-type")
    if kind == "bad_json":
        assert content_type == "application/json"
        with pytest.raises(json.JSONDecodeError):
            response.json()
    elif kind == "not_jsonrpc":
        assert "jsonrpc" not in response.json()
    elif kind == "wrong_id":
        assert response.json()["id"] == 1002
    elif kind == "empty_body":
        assert (content_type, response.content) == ("application/json", b"")
    elif kind == "wrong_content_type":
        assert content_type == "text/html"
    elif kind == "no_content_type":
        assert content_type is None
        assert response.json()["id"] == 2
    elif kind == "accepted":
        assert (response.status_code, response.content) == (202, b"")
    elif kind == "sse_bad_json":
        (event,) = parse_sse(response.text)
        with pytest.raises(json.JSONDecodeError):
            event.json()
    elif kind == "sse_comments_only":
        assert content_type == "text/event-stream"
        assert parse_sse(response.text) == []  # nothing but comments and an empty data:
    elif kind == "huge_event":
        big, answer = parse_sse(response.text)
        assert len(big.data) > 1000
        assert answer.json()["id"] == 2


async def test_garbage_bad_session_id(wire: Any, mcp_mock: MockMCPServer) -> None:
    mcp_mock.faults.garbage("bad_session_id", method="initialize")
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    response = await wire.request("initialize", params)
    assert response.headers["mcp-session-id"] == "bad session id"
    assert len(mcp_mock.sessions) == 1  # the server did create a (valid) session


async def test_redirect(wire: Any, mcp_mock: MockMCPServer) -> None:
    mcp_mock.faults.redirect("http://elsewhere.test/mcp", status=308)
    response = await wire.initialize()
    assert response.status_code == 308
    assert response.headers["location"] == "http://elsewhere.test/mcp"


async def test_targets_tool_and_counts(wire: Any, counter: MockMCPServer) -> None:
    await wire.initialize()
    fault = counter.faults.status(503, tool="increment", after=1, times=None)
    codes = []
    for name in ["increment", "peek", "increment", "increment", "peek"]:
        codes.append((await wire.request("tools/call", {"name": name})).status_code)
    assert codes == [200, 200, 503, 503, 200]
    assert (fault.seen, fault.fired, fault.exhausted) == (3, 2, False)
    fault.cancel()
    assert (await wire.request("tools/call", {"name": "increment"})).status_code == 200
    assert counter.faults.pending == []


async def test_faults_of_one_kind_queue_up(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    mcp_mock.faults.status(503)
    mcp_mock.faults.status(500)
    codes = [(await wire.request("ping")).status_code for _ in range(3)]
    assert codes == [503, 500, 200]


async def test_faults_compose_across_stages(wire: Any, counter: MockMCPServer) -> None:
    await wire.initialize()
    counter.faults.connect_error(tool="increment")
    counter.faults.delay(0.001, tool="increment", times=2)
    counter.faults.status(502, tool="increment")
    counter.faults.lose_response(tool="increment")
    with pytest.raises(httpx.ConnectError):
        await wire.request("tools/call", {"name": "increment"})
    assert (await wire.request("tools/call", {"name": "increment"})).status_code == 502
    with pytest.raises(httpx.RemoteProtocolError):
        await wire.request("tools/call", {"name": "increment"})
    assert (await wire.call_tool("increment"))["result"]["content"][0]["text"] == "2"
    assert [r.faults for r in counter.requests_for(tool="increment")] == [
        ["connect_error"],
        ["delay", "status"],
        ["delay", "lose_response"],
        [],
    ]


async def test_faults_target_post_by_default(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    mcp_mock.faults.status(503)
    listen = await wire.get()  # a background GET does not eat the fault
    assert listen.status_code == 200
    await listen.aclose()
    assert (await wire.request("ping")).status_code == 503
    mcp_mock.faults.status(503, http_method="GET")
    listen = await wire.get()
    assert listen.status_code == 503
    await listen.aclose()
    mcp_mock.faults.status(500, http_method="*")
    assert (await wire.client.delete(wire.url, headers=wire.headers())).status_code == 500


async def test_targets_session_id(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    first = wire.session_id
    mcp_mock.faults.status(503, session_id=first)
    await wire.initialize()
    assert (await wire.request("ping")).status_code == 200
    wire.session_id = first
    assert (await wire.request("ping")).status_code == 503
