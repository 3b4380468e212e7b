"""The rig itself, checked with plain httpx (never with the client under test).

If these fail, every client integration test would fail for reasons that have nothing to
do with the client, so they pin down what the other tests rely on: readiness, session
ids, SSE event ids, shared state across instances, execution counts, kill and restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.rig import RawMcpSession, ServerCluster, ServerProcess, iter_sse, parse_sse

pytestmark = pytest.mark.integration

ACCEPT_SSE = "text/event-stream"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain client that ignores proxy settings from the environment (loopback only)."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def open_session(server: ServerProcess, http: httpx.Client) -> RawMcpSession:
    session = RawMcpSession(server.url, http)
    session.initialize()
    return session


def test_server_starts_healthy(mcp_server: ServerProcess, http: httpx.Client) -> None:
    body = http.get(mcp_server.health_url).json()
    assert body["status"] == "ok"
    assert body["instance"] == "single"
    assert body["pid"] == mcp_server.pid
    assert body["state_backend"] == "sqlite"
    assert body["event_store"] == "memory"


def test_initialize_returns_session_id(mcp_server: ServerProcess, http: httpx.Client) -> None:
    session = RawMcpSession(mcp_server.url, http)
    reply = session.initialize()
    assert reply.result["protocolVersion"] == "2025-11-25"
    assert session.session_id is not None
    assert all(0x21 <= ord(ch) <= 0x7E for ch in session.session_id)
    # State is keyed by exactly the id the client holds.
    who = session.structured("whoami")
    assert who == {"instance": "single", "pid": mcp_server.pid, "session_id": session.session_id}


def test_tool_call_sse_events_carry_ids(mcp_server: ServerProcess, http: httpx.Client) -> None:
    session = open_session(mcp_server, http)
    reply = session.call_tool("increment", {"by": 1})
    assert reply.response.headers["content-type"].startswith(ACCEPT_SSE)
    assert reply.events, "no SSE events"
    ids = [event.id for event in reply.events]
    assert all(ids), f"an event without id: {reply.events}"
    assert len(set(ids)) == len(ids)
    # 2025-11-25 priming event: an id, empty data, and the configured retry hint.
    priming = reply.events[0]
    assert priming.data == ""
    assert priming.retry == 1000
    assert reply.result["structuredContent"] == {"result": 1}


def test_progress_notifications_precede_result(
    mcp_server: ServerProcess, http: httpx.Client
) -> None:
    session = open_session(mcp_server, http)
    reply = session.call_tool("slow_progress", {"steps": 3}, progress_token="tok")
    progress = [n["params"] for n in reply.notifications if n["method"] == "notifications/progress"]
    assert [(p["progress"], p["total"], p["progressToken"]) for p in progress] == [
        (1, 3, "tok"),
        (2, 3, "tok"),
        (3, 3, "tok"),
    ]
    assert reply.result["structuredContent"] == {"steps": 3, "completed": True}


def test_tool_annotations(mcp_server: ServerProcess, http: httpx.Client) -> None:
    session = open_session(mcp_server, http)
    tools = {
        t["name"]: t.get("annotations", {}) for t in session.request("tools/list").result["tools"]
    }

    def hints(name: str) -> tuple[Any, Any, Any]:
        a = tools[name]
        return (
            a.get("readOnlyHint", False),
            a.get("idempotentHint", False),
            a.get("destructiveHint"),
        )

    assert hints("increment") == (False, False, False)
    assert hints("add_note") == (False, False, False)
    assert hints("set_counter") == (False, True, True)
    assert hints("resume_session") == (False, True, True)
    for name in ("get_counter", "list_notes", "add", "whoami", "executions", "slow_progress"):
        assert tools[name]["readOnlyHint"] is True, name


def test_state_shared_across_cluster(mcp_cluster: ServerCluster, http: httpx.Client) -> None:
    for node in mcp_cluster:
        body = http.get(node.health_url).json()
        assert (body["state_backend"], body["event_store"]) == ("redis", "redis")

    first = open_session(mcp_cluster[0], http)
    assert first.structured("increment", {"by": 5}) == 5
    assert first.structured("add_note", {"text": "remember me"}) == 1

    second = open_session(mcp_cluster[1], http)
    assert second.structured("whoami")["instance"] == "node-2"
    copied = second.structured("resume_session", {"old_session_id": first.session_id})
    assert copied["found"] is True
    assert (copied["counter"], copied["notes"]) == (5, ["remember me"])
    assert second.structured("get_counter") == 5
    assert second.structured("list_notes") == ["remember me"]
    # Idempotent: a repeat gives the same state, not double.
    second.structured("resume_session", {"old_session_id": first.session_id})
    assert second.structured("increment", {"by": 1}) == 6


def test_executions_are_counted_across_instances(
    mcp_cluster: ServerCluster, http: httpx.Client
) -> None:
    call_id = f"call-{uuid.uuid4().hex}"
    for node in (mcp_cluster[0], mcp_cluster[0], mcp_cluster[1]):
        open_session(node, http).structured("increment", {"call_id": call_id})
    third = open_session(mcp_cluster[2], http)
    assert third.structured("executions", {"call_id": call_id}) == 3
    route = http.get(f"{mcp_cluster[2].base_url}/executions/{call_id}").json()
    assert route == {"call_id": call_id, "count": 3}
    assert http.get(f"{mcp_cluster[0].base_url}/executions/never-ran").json()["count"] == 0


def test_sqlite_state_shared_between_processes(server_factory: Any, http: httpx.Client) -> None:
    one, two = server_factory("one"), server_factory("two")
    first = open_session(one, http)
    first.structured("set_counter", {"value": 41})
    second = open_session(two, http)
    assert (
        second.structured("resume_session", {"old_session_id": first.session_id})["counter"] == 41
    )


def test_kill_and_restart(mcp_server: ServerProcess, http: httpx.Client) -> None:
    session = open_session(mcp_server, http)
    session.structured("increment", {"by": 3})
    old_pid, old_port = mcp_server.pid, mcp_server.port

    mcp_server.kill()
    assert not mcp_server.running
    with pytest.raises(httpx.ConnectError):
        http.get(mcp_server.health_url)

    mcp_server.restart()
    assert mcp_server.port == old_port
    assert mcp_server.pid != old_pid
    assert http.get(mcp_server.health_url).json()["pid"] == mcp_server.pid

    # Sessions lived in the dead process: the old id is unknown now (404) ...
    stale = session.post({"jsonrpc": "2.0", "id": 99, "method": "tools/list"})
    assert stale.status_code == 404
    # ... but the state survived in the shared store.
    fresh = open_session(mcp_server, http)
    assert (
        fresh.structured("resume_session", {"old_session_id": session.session_id})["counter"] == 3
    )


def test_server_variants_from_env(server_factory: Any, http: httpx.Client) -> None:
    """``MCP_EVENT_STORE=none``: SSE without ids; ``MCP_JSON_RESPONSE=1``: plain JSON."""
    no_ids = server_factory("no-ids", env={"MCP_EVENT_STORE": "none"}, start=False).start()
    as_json = server_factory("json", env={"MCP_JSON_RESPONSE": "1"}, start=False).start()
    no_ids.wait_healthy()
    as_json.wait_healthy()

    reply = open_session(no_ids, http).call_tool("increment")
    assert reply.response.headers["content-type"].startswith(ACCEPT_SSE)
    assert reply.events
    assert all(event.id is None for event in reply.events)

    reply = open_session(as_json, http).call_tool("increment", {"by": 2})
    assert reply.response.headers["content-type"].startswith("application/json")
    assert reply.result["structuredContent"] == {"result": 2}


def test_terminate_stops_the_process(server_factory: Any) -> None:
    server = server_factory("graceful")
    server.terminate()
    assert not server.running


def test_closed_stream_resumes_with_last_event_id(
    mcp_server: ServerProcess, http: httpx.Client
) -> None:
    """``close_stream_at`` ends the POST's stream early; a GET with Last-Event-ID resumes.

    The tool pauses at a gate after closing the stream and the gate is opened only once
    the resumed stream has been primed, so the later events are surely live on it (the
    SDK can drop events stored while a replay is still being set up).
    """
    session = open_session(mcp_server, http)
    gate = f"gate-{uuid.uuid4().hex}"
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "slow_progress",
            "arguments": {"steps": 4, "close_stream_at": 2, "gate": gate},
            "_meta": {"progressToken": "p"},
        },
    }
    first = parse_sse(session.post(body).text)
    last_id = [e.id for e in first if e.id][-1]
    messages = [e.json() for e in first if e.data.strip()]
    assert all(m.get("id") != 7 for m in messages), "the answer came before the close"

    headers = {
        "Accept": ACCEPT_SSE,
        "Mcp-Session-Id": session.session_id or "",
        "MCP-Protocol-Version": session.protocol_version,
        "Last-Event-ID": last_id,
    }
    with http.stream("GET", session.url, headers=headers) as response:
        assert response.status_code == 200
        # Bounded: the server ends the stream after the answer, and every read has the
        # client's timeout.
        for event in iter_sse(response.iter_lines()):
            assert event.id, f"resumed event without id: {event}"
            if not event.data:
                # Priming event of the resumed stream: it is live now, let the tool go on.
                assert http.post(f"{mcp_server.base_url}/gates/{gate}").status_code == 200
                continue
            messages.append(event.json())
            if messages[-1].get("id") == 7:
                break
    steps = [
        m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"
    ]
    assert steps == [1, 2, 3, 4]
    assert messages[-1]["result"]["structuredContent"] == {"steps": 4, "completed": True}


def test_host_and_origin_protection(mcp_server: ServerProcess, http: httpx.Client) -> None:
    session = open_session(mcp_server, http)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    proxied = {**session.headers(), "Host": "localhost:1", "Origin": "http://127.0.0.1:1"}
    assert http.post(mcp_server.url, headers=proxied, json=ping).status_code == 200
    foreign = {**session.headers(), "Origin": "http://attacker.invalid"}
    assert http.post(mcp_server.url, headers=foreign, json=ping).status_code == 403
