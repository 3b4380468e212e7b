"""Every documented exit code, each produced by a real situation against real processes."""

from __future__ import annotations

import json
import re
import uuid

from tests.cli.conftest import CliResult, LiveCli, run_cli
from tests.rig import ServerProcess

TRACEBACK = "Traceback (most recent call last)"


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
    assert "protocol_version must be one of" in one_error_line(result)


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
    assert line.startswith(
        "mcp-call: error: outcome unknown for tool 'increment': tools/call did not complete"
    )
    assert "the tool may or may not have run" in line


def test_5_outcome_unknown_when_the_server_dies_mid_call(
    mcp_server: ServerProcess, live_cli: type[LiveCli]
) -> None:
    gate = f"held-{uuid.uuid4().hex}"
    cli = live_cli([mcp_server.url, "-v", "call", "increment", f"gate={gate}"])
    # The call is in the server's hands once its response headers arrived.
    cli.wait_for(r"-> POST \S+\s+tools/call increment")
    cli.wait_for(r"<- 200 POST \S+ in ")
    mcp_server.kill()
    result = cli.finish()
    assert result.code == 5, result
    assert "OutcomeUnknownError" in result.stderr, result  # the -v traceback names it
    assert "mcp-call: error: outcome unknown for tool 'increment':" in result.stderr
