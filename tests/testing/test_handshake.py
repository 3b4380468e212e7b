"""The handshake-era wire rules, seen from a raw httpx client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mcp_resilient.testing import MockMCPServer

pytestmark = pytest.mark.anyio


async def test_initialize_issues_visible_ascii_session_id(
    wire: Any, mcp_mock: MockMCPServer
) -> None:
    response = await wire.initialize()
    assert response.status_code == 200
    session_id = response.headers["mcp-session-id"]
    assert session_id and all(0x21 <= ord(c) <= 0x7E for c in session_id)
    result = wire.answer(response)["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert result["serverInfo"] == {"name": "mock-mcp", "version": "0.0.0"}
    assert result["capabilities"]["tools"] == {"listChanged": True}
    assert "resultType" not in result
    session = mcp_mock.sessions[session_id]
    assert session.initialized
    assert session.client_info is not None and session.client_info.name == "wire-test"


async def test_session_ids_differ_per_session(wire: Any) -> None:
    first = (await wire.initialize()).headers["mcp-session-id"]
    second = (await wire.initialize()).headers["mcp-session-id"]
    assert first != second


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2099-01-01", "2025-11-25"),
    ],
)
async def test_version_negotiation(wire: Any, offered: str, answered: str) -> None:
    response = await wire.initialize(offered)
    assert wire.answer(response)["result"]["protocolVersion"] == answered


@pytest.mark.mcp_mock(protocol_versions=["2025-03-26"])
async def test_version_negotiation_with_an_old_server(wire: Any) -> None:
    response = await wire.initialize("2025-11-25")
    assert wire.answer(response)["result"]["protocolVersion"] == "2025-03-26"


@pytest.mark.mcp_mock(response_mode="json")
async def test_initialize_as_json(wire: Any) -> None:
    response = await wire.initialize()
    assert response.headers["content-type"] == "application/json"
    assert response.json()["id"] == 1


async def test_initialize_as_sse_carries_event_ids(wire: Any) -> None:
    response = await wire.initialize()
    (event,) = wire.events(response)
    assert event.id is not None
    assert event.event == "message"
    assert event.json()["result"]["protocolVersion"] == "2025-11-25"


async def test_notifications_and_responses_get_202(wire: Any, mcp_mock: MockMCPServer) -> None:
    await wire.initialize()
    note = await wire.post(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
    )
    assert note.status_code == 202
    assert note.content == b""
    reply = await wire.post({"jsonrpc": "2.0", "id": "mock-9", "result": {}})
    assert reply.status_code == 202
    assert mcp_mock.client_responses["mock-9"] == {"jsonrpc": "2.0", "id": "mock-9", "result": {}}
    assert mcp_mock.sessions[wire.session_id].cancelled == [7]


async def test_400_without_session_id(wire: Any) -> None:
    await wire.initialize()
    wire.session_id = None
    response = await wire.request("tools/list")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


async def test_404_for_unknown_session_id(wire: Any) -> None:
    await wire.initialize()
    wire.session_id = "no-such-session"
    response = await wire.request("tools/list")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == {"code": -32600, "message": "Session not found"}
    assert body["id"] == 2


@pytest.mark.parametrize("accept", [None, "application/json", "text/event-stream", "*/*"])
async def test_406_for_a_bad_accept_on_post(wire: Any, accept: str | None) -> None:
    body = wire.request_body("initialize", {})
    headers = {"content-type": "application/json"}
    if accept is not None:
        headers["accept"] = accept
    response = await wire.client.post(wire.url, content=json.dumps(body), headers=headers)
    assert response.status_code == 406


async def test_406_for_a_get_without_event_stream(wire: Any) -> None:
    await wire.initialize()
    response = await wire.client.get(wire.url, headers=wire.headers({"accept": "application/json"}))
    assert response.status_code == 406


async def test_415_for_a_wrong_content_type(wire: Any) -> None:
    response = await wire.post(wire.request_body("ping"), headers={"content-type": "text/plain"})
    assert response.status_code == 415


async def test_400_for_an_unsupported_protocol_version_header(wire: Any) -> None:
    await wire.initialize()
    wire.protocol_version = "2026-07-28"
    response = await wire.request("tools/list")
    assert response.status_code == 400


async def test_missing_version_header_is_accepted(wire: Any) -> None:
    await wire.initialize()
    wire.protocol_version = None
    assert "result" in await wire.call("ping")


async def test_parse_errors_and_batches(wire: Any) -> None:
    headers = wire.headers()
    bad = await wire.client.post(wire.url, content=b"{nope", headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == -32700
    batch = await wire.post([wire.request_body("ping")])
    assert batch.status_code == 400
    invalid = await wire.post({"id": 1, "method": "ping"})
    assert invalid.status_code == 400


async def test_ping_and_unknown_method(wire: Any) -> None:
    await wire.initialize()
    assert (await wire.call("ping"))["result"] == {}
    error = (await wire.call("no/such"))["error"]
    assert error["code"] == -32601


async def test_other_http_methods_get_405(wire: Any) -> None:
    response = await wire.client.put(wire.url, content=b"{}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, DELETE"


async def test_unknown_path_on_the_fake_host_is_404(
    http: httpx.AsyncClient, mcp_mock: MockMCPServer
) -> None:
    response = await http.get("http://mcp.test/elsewhere")
    assert response.status_code == 404
    assert mcp_mock.requests.last.endpoint is None


@pytest.mark.mcp_mock(stateful=False)
async def test_stateless_server(wire: Any, mcp_mock: MockMCPServer) -> None:
    response = await wire.initialize()
    assert "mcp-session-id" not in response.headers
    assert "result" in await wire.call("tools/list")
    assert mcp_mock.sessions == {}
    delete = await wire.client.delete(wire.url)
    assert delete.status_code == 405


@pytest.mark.mcp_mock(auth_token="s3cret")
async def test_auth_token(wire: Any) -> None:
    denied = await wire.initialize()
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == "Bearer"
    wire.client.headers["authorization"] = "Bearer s3cret"
    assert (await wire.initialize()).status_code == 200


@pytest.mark.mcp_mock(allowed_origins=["https://app.example"])
async def test_origin_check(wire: Any) -> None:
    body = wire.request_body("ping")
    assert (await wire.post(body, headers={"origin": "https://evil.example"})).status_code == 403
    ok = await wire.initialize()
    assert ok.status_code == 200


async def test_custom_session_ids_must_be_visible_ascii() -> None:
    server = MockMCPServer(session_ids=lambda n: f"has space {n}")
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    async with httpx.AsyncClient(transport=server.transport()) as client:
        with pytest.raises(ValueError, match="visible ASCII"):
            await client.post(
                server.url, json=body, headers={"accept": "application/json, text/event-stream"}
            )


async def test_custom_session_ids() -> None:
    server = MockMCPServer(session_ids=lambda n: f"session-{n}", response_mode="json")
    async with httpx.AsyncClient(transport=server.transport()) as client:
        response = await client.post(
            server.url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
            headers={"accept": "application/json, text/event-stream"},
        )
    assert response.headers["mcp-session-id"] == "session-1"
