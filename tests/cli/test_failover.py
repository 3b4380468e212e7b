"""Failover with several URLs, seen through ``mcp-call``: the trace and the notes show it."""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx

from tests.cli.conftest import LiveCli, run_cli
from tests.integration.conftest import ServerFactory
from tests.rig import ServerProcess

# Sessions, their failover and resume_session exist only in the handshake era.
HANDSHAKE_ERA = ("--protocol-version", "2025-11-25")


def open_gate(server: ServerProcess, name: str) -> None:
    response = httpx.post(f"{server.base_url}/gates/{name}", timeout=10)
    response.raise_for_status()


def waiting_at(server: ServerProcess, gate: str, timeout: float = 30.0) -> str:
    """The instance a call waits at ``gate`` on (shared state): a bounded wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{server.base_url}/gates/{gate}", timeout=10)
        response.raise_for_status()
        if waiting := response.json()["waiting"]:
            return str(waiting)
        assert time.monotonic() < deadline, f"nothing waited at gate {gate} within {timeout}s"
        time.sleep(0.05)  # poll interval of a bounded wait on a condition


def start_paused_call(
    live_cli: type[LiveCli], servers: list[ServerProcess], gate: str, *extra: str
) -> tuple[LiveCli, ServerProcess, ServerProcess]:
    """A read-only call paused on a gate after its first progress step, and where it runs."""
    cli = live_cli(
        [
            *(s.url for s in servers),
            *HANDSHAKE_ERA,
            "-v",
            "call",
            "slow_progress",
            "steps=2",
            f"gate={gate}",
            "gate_at=1",
            *extra,
        ]
    )
    started = cli.wait_for(r"event session_started endpoint=(\S+) session=(\S+)")
    victim = next(s for s in servers if s.url == started[1])
    survivor = next(s for s in servers if s is not victim)
    cli.wait_for(r"sse event id=\S+ notifications/progress")
    return cli, victim, survivor


def test_server_killed_mid_call_fails_over_and_resumes(
    server_factory: ServerFactory, live_cli: type[LiveCli]
) -> None:
    # Both instances share one state store: the gate and resume_session work across them.
    servers = [server_factory("a"), server_factory("b")]
    gate = f"failover-{uuid.uuid4().hex}"
    cli, victim, survivor = start_paused_call(live_cli, servers, gate, "--json")
    victim.kill()
    open_gate(survivor, gate)
    result = cli.finish()

    assert result.code == 0, result
    assert json.loads(result.stdout)["structuredContent"] == {"steps": 2, "completed": True}
    trace = result.stderr
    assert re.search(rf"!! GET {re.escape(victim.url)} failed after .*ConnectError", trace)
    assert f"event session_lost endpoint={victim.url}" in trace
    assert re.search(
        rf"event failover endpoint={re.escape(survivor.url)} session=\S+"
        rf" from_endpoint={re.escape(victim.url)}",
        trace,
    ), result
    assert f"event session_resumed endpoint={survivor.url}" in trace
    assert re.search(rf"-> POST {re.escape(survivor.url)}\s+tools/call resume_session", trace)
    assert re.search(rf"-> POST {re.escape(survivor.url)}\s+tools/call slow_progress", trace)


def test_no_resume_skips_resume_session(
    server_factory: ServerFactory, live_cli: type[LiveCli]
) -> None:
    servers = [server_factory("a"), server_factory("b")]
    gate = f"failover-{uuid.uuid4().hex}"
    cli, victim, survivor = start_paused_call(live_cli, servers, gate, "--no-resume")
    victim.kill()
    open_gate(survivor, gate)
    result = cli.finish()

    assert result.code == 0, result
    assert json.loads(result.stdout) == {"steps": 2, "completed": True}
    assert "event session_resumed" not in result.stderr
    assert "tools/call resume_session" not in result.stderr


def test_notes_on_stderr_without_verbose(
    server_factory: ServerFactory, live_cli: type[LiveCli]
) -> None:
    servers = [server_factory("a"), server_factory("b")]
    gate = f"failover-{uuid.uuid4().hex}"
    cli = live_cli(
        [
            *(s.url for s in servers),
            *HANDSHAKE_ERA,
            "call",
            "slow_progress",
            "steps=2",
            f"gate={gate}",
        ]
    )
    # Without -v the first progress line tells that the call is running (and paused).
    cli.wait_for(r"^progress 1/2")
    # Which server runs it is not printed without -v: kill the one whose session is open.
    victim = next(s for s in servers if _has_session(s))
    survivor = next(s for s in servers if s is not victim)
    victim.kill()
    open_gate(survivor, gate)
    result = cli.finish()

    assert result.code == 0, result
    assert json.loads(result.stdout) == {"steps": 2, "completed": True}
    notes = [line for line in result.stderr.splitlines() if line.startswith("mcp-call: ")]
    assert any(
        line.startswith(f"mcp-call: failover: session moved from {victim.url} to {survivor.url}")
        for line in notes
    ), result
    assert any(line.startswith("mcp-call: resumed: state of session") for line in notes), result


def _has_session(server: ServerProcess) -> bool:
    """Whether this instance served the CLI's initialize (its access log says so)."""
    return '"POST /mcp HTTP/1.1" 200' in server.log_tail(200)


def test_dead_first_url_still_succeeds(dead_url: str, mcp_server: ServerProcess) -> None:
    result = run_cli(dead_url, mcp_server.url, "-v", "ping", "--json", "--retries", "0")
    assert result.code == 0, result
    assert json.loads(result.stdout)["endpoint"] == mcp_server.url
    if f"!! POST {dead_url}" in result.stderr:
        # The pool tried the dead URL (it picks at random): the retry event names the URL
        # it moves to, and the one that failed.
        assert re.search(
            rf"\*\* event retry endpoint={re.escape(mcp_server.url)} .*"
            rf"from_endpoint={re.escape(dead_url)}",
            result.stderr,
        ), result


def test_stateless_era_resends_a_safe_call_to_the_survivor(
    server_factory: ServerFactory, live_cli: type[LiveCli]
) -> None:
    # auto lands on 2026-07-28: no session to move or resume, the read-only call is re-sent.
    servers = [server_factory("a"), server_factory("b")]
    gate = f"failover-{uuid.uuid4().hex}"
    cli = live_cli(
        [*(s.url for s in servers), "-v", "call", "slow_progress", "steps=2", f"gate={gate}"]
    )
    cli.wait_for(r"sse event .*notifications/progress")
    # The call waits at the gate after step 1; the shared store says on which instance.
    victim = next(s for s in servers if s.instance == waiting_at(servers[0], gate))
    survivor = next(s for s in servers if s is not victim)
    victim.kill()
    open_gate(survivor, gate)
    result = cli.finish()

    assert result.code == 0, result
    assert json.loads(result.stdout) == {"steps": 2, "completed": True}
    trace = result.stderr
    assert "[protocol=2026-07-28]" in trace
    assert re.search(
        rf"\*\* event retry endpoint={re.escape(survivor.url)} method=tools/call .*"
        rf"from_endpoint={re.escape(victim.url)}",
        trace,
    ), result
    assert re.search(rf"-> POST {re.escape(survivor.url)}\s+tools/call slow_progress", trace)
    assert "session=" not in trace
    assert "tools/call resume_session" not in trace
