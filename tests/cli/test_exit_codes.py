"""Every documented exit code, each produced by a real situation against real processes."""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx

from tests.cli.conftest import CliResult, LiveCli, run_cli
from tests.integration.conftest import ServerFactory
from tests.rig import ServerProcess

TRACEBACK = "Traceback (most recent call last)"
COMMIT_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


def one_error_line(result: CliResult) -> str:
    """The stderr error line (exactly one), with no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("mcp-call: error:")]
    assert len(errors) == 1, result
    assert TRACEBACK not in result.stderr, result
    return errors[0]


def test_0_success(mcp_server: ServerProcess) -> None:
    assert run_cli(mcp_server.url, "ping").code == 0


def test_1_tool_error(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "call", "fail", "message=disk on fire")
    assert result.code == 1, result
    assert result.stdout == ""
    assert one_error_line(result) == (
        f"mcp-call: error: tool 'fail' answered with isError (endpoint {mcp_server.url}):"
        " disk on fire"
    )


def test_1_tool_error_json_keeps_the_result_on_stdout(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "call", "fail", "--json")
    assert result.code == 1, result
    answer = json.loads(result.stdout)
    assert answer["isError"] is True
    assert answer["content"][0]["text"] == "requested failure"


def test_1_bad_argument_value_rejected_by_the_tool(mcp_server: ServerProcess) -> None:
    # FastMCP reports argument validation as a tool error (isError), not a protocol error.
    result = run_cli(mcp_server.url, "call", "add", "a=two", "b=2")
    assert result.code == 1, result
    assert "tool 'add' answered with isError" in result.stderr


def test_2_bad_argument(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "call", "add", "a", "b=2")
    assert result.code == 2, result
    assert result.stdout == ""
    assert one_error_line(result) == (
        "mcp-call: error: argument 'a' is not KEY=VALUE (write a=VALUE, or use --args JSON)"
        " (see 'mcp-call call --help')"
    )


def test_2_bad_json_on_stdin(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "call", "add", "--args", "-", input="{not json")
    assert result.code == 2, result
    assert "--args - (stdin) is not valid JSON" in one_error_line(result)


def test_2_unsupported_protocol_version(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "--protocol-version", "1999-01-01", "ping")
    assert result.code == 2, result
    assert result.stdout == ""
    # Rejected while parsing, before any connection: the line lists what is accepted.
    assert one_error_line(result) == (
        "mcp-call: error: argument --protocol-version: '1999-01-01' is not a protocol version"
        " this client speaks (auto, 2026-07-28, 2025-11-25, 2025-06-18, 2025-03-26)"
        " (see 'mcp-call --help')"
    )


def test_3_dead_url(dead_url: str) -> None:
    result = run_cli(dead_url, "ping")
    assert result.code == 3, result
    assert result.stdout == ""
    line = one_error_line(result)
    assert line.startswith("mcp-call: error: could not reach any endpoint:")
    assert dead_url in line and "check that the server is running" in line


def test_3_dead_url_json_error_document(dead_url: str) -> None:
    result = run_cli(dead_url, "ping", "--json", "--retries", "0")
    assert result.code == 3, result
    error = json.loads(result.stdout)["error"]
    assert error["exitCode"] == 3
    assert error["type"] == "ConnectError"
    assert dead_url in error["endpoint"]


def test_3_every_url_dead(dead_url: str) -> None:
    other = dead_url.replace("/mcp", "/other/mcp")
    result = run_cli(dead_url, other, "tools", "--retries", "1")
    assert result.code == 3, result
    # Two URLs plus one retry: three attempts, the first two announced as retries.
    assert result.stderr.count("mcp-call: retry: initialize attempt") == 2, result
    assert f"(endpoint {dead_url}, {other})" in one_error_line(result)


def test_3_verbose_adds_the_traceback_and_each_attempt(dead_url: str) -> None:
    result = run_cli(dead_url, "ping", "-v", "--retries", "0")
    assert result.code == 3, result
    assert TRACEBACK in result.stderr
    assert re.search(rf"!! POST {re.escape(dead_url)} failed after .* ConnectError", result.stderr)


def test_4_server_error(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "read", "notes://99")
    assert result.code == 4, result
    line = one_error_line(result)
    assert re.match(
        r"mcp-call: error: server error -?\d+ on resources/read: no note at index 99", line
    )
    assert mcp_server.url in line


def test_4_server_error_json(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "read", "notes://99", "--json")
    assert result.code == 4, result
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ServerError" and isinstance(error["code"], int)


def test_4_http_error_wrong_path(mcp_server: ServerProcess) -> None:
    result = run_cli(f"{mcp_server.base_url}/not-mcp", "ping")
    assert result.code == 4, result
    assert "HTTP 404" in one_error_line(result)
    assert "check the URL" in result.stderr


def test_4_unknown_tool_in_tools(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "tools", "nope")
    assert result.code == 4, result
    assert "no tool named 'nope'" in one_error_line(result)


def test_5_outcome_unknown_on_timeout(mcp_server: ServerProcess) -> None:
    # increment commits, then waits on a gate nobody opens: the answer never comes.
    gate = f"never-{uuid.uuid4().hex}"
    result = run_cli(mcp_server.url, "call", "increment", f"gate={gate}", "--timeout", "2")
    assert result.code == 5, result
    line = one_error_line(result)
    assert line.startswith("mcp-call: error: outcome unknown for tool 'increment': tools/call")
    assert "2 s" in line and "may have run" in line and "check its effect" in line


def executions(server: ServerProcess, call_id: str) -> int:
    """How many times ``increment`` ran with ``call_id`` (the server's own count)."""
    response = httpx.get(f"{server.base_url}/executions/{call_id}", timeout=10)
    response.raise_for_status()
    return int(response.json()["count"])


def kill_once_committed(cli: LiveCli, server: ServerProcess, call_id: str) -> None:
    """SIGKILL ``server`` once the gated ``increment`` ran (its answer waits at the gate).

    A bounded wait on the server's execution count; fails if the CLI exits first.
    """
    cli.wait_for(r"-> POST \S+\s+tools/call increment")
    deadline = time.monotonic() + COMMIT_TIMEOUT
    while executions(server, call_id) < 1:
        assert cli.proc.poll() is None, cli.finish()
        assert time.monotonic() < deadline, f"increment did not run within {COMMIT_TIMEOUT}s"
        time.sleep(POLL_INTERVAL)  # poll interval of a bounded wait on a condition
    server.kill()


def gated_increment(server: ServerProcess, *extra: str) -> tuple[list[str], str]:
    """``mcp-call`` arguments for an ``increment`` that commits, then waits on a closed gate."""
    call_id, gate = uuid.uuid4().hex, f"held-{uuid.uuid4().hex}"
    args = [server.url, "-v", *extra, "call", "increment", f"call_id={call_id}", f"gate={gate}"]
    return args, call_id


def assert_outcome_unknown(result: CliResult) -> None:
    assert result.code == 5, result
    assert "OutcomeUnknownError" in result.stderr, result  # the -v traceback names it
    assert "mcp-call: error: outcome unknown for tool 'increment':" in result.stderr, result


def test_5_outcome_unknown_when_the_server_dies_mid_call(
    server_factory: ServerFactory, live_cli: type[LiveCli]
) -> None:
    # A server without the idempotency ledger: a non-idempotent call in doubt is never
    # re-sent, so the client must say the outcome is unknown.
    server = server_factory("plain", env={"MCP_IDEMPOTENCY": "0"})
    assert "idempotency" not in run_cli(server.url, "info").stdout
    args, call_id = gated_increment(server)
    cli = live_cli(args)
    kill_once_committed(cli, server, call_id)
    result = cli.finish()
    assert_outcome_unknown(result)
    # Nothing was re-sent: the only tools/call increment is the first one.
    assert len(re.findall(r"-> POST \S+\s+tools/call increment", result.stderr)) == 1, result


def test_5_outcome_unknown_when_the_server_dies_mid_call_in_the_handshake_era(
    server_factory: ServerFactory, live_cli: type[LiveCli]
) -> None:
    server = server_factory("plain", env={"MCP_IDEMPOTENCY": "0"})
    args, call_id = gated_increment(server, "--protocol-version", "2025-11-25")
    cli = live_cli(args)
    cli.wait_for(r"event session_started endpoint=\S+ session=\S+")
    kill_once_committed(cli, server, call_id)
    assert_outcome_unknown(cli.finish())


def test_5_outcome_unknown_when_keyed_resends_cannot_connect(
    mcp_server: ServerProcess, live_cli: type[LiveCli]
) -> None:
    # The server honours idempotency keys, so the in-doubt increment is re-sent with its
    # key; the server is gone and nothing comes back, so every re-send fails to connect.
    # The first attempt may have run: the outcome is unknown (exit 5), not "nothing ran".
    # (Regression test of a library bug that answered with the last ConnectError, exit 3.)
    assert "io.github.mcp-resilient/idempotency" in run_cli(mcp_server.url, "info").stdout
    args, call_id = gated_increment(mcp_server, "--retries", "1")
    cli = live_cli(args)
    kill_once_committed(cli, mcp_server, call_id)
    result = cli.finish()
    assert_outcome_unknown(result)
    # The keyed re-send was attempted (and could not connect): this is that path. A keyed
    # re-send first asks the endpoint again whether it honours keys (it may have come back
    # as another build), and that is what fails to connect; no second tools/call goes out.
    assert len(re.findall(r"-> POST \S+\s+server/discover", result.stderr)) >= 2, result
    assert len(re.findall(r"-> POST \S+\s+tools/call increment", result.stderr)) == 1, result
    assert "ConnectError" in result.stderr, result
