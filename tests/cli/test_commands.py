"""Each ``mcp-call`` command as a subprocess against a real example server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.cli.conftest import CliResult, cli_env, mcp_call_argv, run_cli
from tests.rig import ServerProcess


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, result
    return result


def document(result: CliResult) -> Any:
    """The one JSON document of --json: all of stdout parses as exactly one value."""
    return json.loads(result.stdout)


# Sessions, the handshake and Last-Event-ID resumption exist only in the handshake era:
# tests about them pin it (the default, auto, lands on the stateless 2026-07-28 era).
HANDSHAKE_ERA = ("--protocol-version", "2025-11-25")


def test_info_human(mcp_server: ServerProcess) -> None:
    result = ok(run_cli(mcp_server.url, *HANDSHAKE_ERA))
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line)
    assert fields["server"].startswith("mcp-resilient-example ")
    assert fields["endpoint"] == mcp_server.url
    assert fields["protocol"] == "2025-11-25"
    assert "tools (listChanged)" in fields["capabilities"]
    assert re.fullmatch(r"[0-9a-f]{32}", fields["session"])
    assert re.search(r"connect\s+\d+\.\d ms \(initialize\)", result.stdout)
    assert re.search(r"round trip\s+\d+\.\d ms \(ping\)", result.stdout)
    assert result.stderr == ""


def test_info_human_auto_lands_on_the_stateless_era(mcp_server: ServerProcess) -> None:
    result = ok(run_cli(mcp_server.url))
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line)
    assert fields["server"].startswith("mcp-resilient-example ")
    assert fields["endpoint"] == mcp_server.url
    assert fields["protocol"] == "2026-07-28"
    assert fields["session"] == "(none: the server does not use sessions)"
    assert re.search(r"\btools\b", fields["capabilities"])
    # The stateless era has no initialize and no ping: both are server/discover.
    assert re.search(r"connect\s+\d+\.\d ms \(server/discover\)", result.stdout)
    assert re.search(r"round trip\s+\d+\.\d ms \(server/discover\)", result.stdout)
    assert result.stderr == ""


def test_info_json(mcp_server: ServerProcess) -> None:
    info = document(ok(run_cli(mcp_server.url, "info", "--json", *HANDSHAKE_ERA)))
    assert info["serverInfo"]["name"] == "mcp-resilient-example"
    assert info["endpoint"] == mcp_server.url
    assert info["endpoints"] == [mcp_server.url]
    assert info["protocolVersion"] == "2025-11-25"
    assert set(info["capabilities"]) >= {"tools", "resources", "prompts", "logging"}
    assert isinstance(info["sessionId"], str) and info["sessionId"]
    assert info["roundTripMs"] >= 0 and info["connectMs"] >= 0


def test_info_json_auto_is_stateless(mcp_server: ServerProcess) -> None:
    for version in ((), ("--protocol-version", "auto"), ("--protocol-version", "2026-07-28")):
        info = document(ok(run_cli(mcp_server.url, "info", "--json", *version)))
        assert info["serverInfo"]["name"] == "mcp-resilient-example", version
        assert info["endpoint"] == mcp_server.url
        assert info["protocolVersion"] == "2026-07-28", version
        assert info["sessionId"] is None, version
        assert set(info["capabilities"]) >= {"tools", "resources", "prompts", "logging"}


def test_protocol_version_is_offered(mcp_server: ServerProcess) -> None:
    info = document(ok(run_cli(mcp_server.url, "--protocol-version", "2025-06-18", "--json")))
    assert info["protocolVersion"] == "2025-06-18"


def test_tools_table(mcp_server: ServerProcess) -> None:
    lines = ok(run_cli(mcp_server.url, "tools")).stdout.splitlines()
    assert lines[0].split() == ["TOOL", "ARGUMENTS", "HINTS", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert re.match(r"add\s+a, b\s+read-only\s+Add two numbers", rows["add"])
    assert re.match(r"set_counter\s+value\s+writes, idempotent, destructive\s", rows["set_counter"])
    assert re.match(
        r"increment\s+by\?, call_id\?, gate\?, reply_gate\?, hold\?, hold_at\?\s+writes\s",
        rows["increment"],
    )


def test_tools_json_and_one_tool(mcp_server: ServerProcess) -> None:
    tools = document(ok(run_cli(mcp_server.url, "tools", "--json")))["tools"]
    by_name = {t["name"]: t for t in tools}
    assert by_name["add"]["annotations"]["readOnlyHint"] is True
    assert by_name["add"]["inputSchema"]["required"] == ["a", "b"]
    one = document(ok(run_cli(mcp_server.url, "tools", "add", "--json")))
    assert one == by_name["add"]
    text = ok(run_cli(mcp_server.url, "tools", "add")).stdout
    assert "input schema:" in text and '"required": [' in text


def test_call_structured_result(mcp_server: ServerProcess) -> None:
    result = ok(run_cli(mcp_server.url, "call", "add", "a=2", "b=3.5"))
    assert json.loads(result.stdout) == {"a": 2.0, "b": 3.5, "sum": 5.5}
    full = document(ok(run_cli(mcp_server.url, "call", "add", "a=2", "b=3", "--json")))
    assert full["structuredContent"]["sum"] == 5
    assert full["isError"] is False
    assert full["content"][0]["type"] == "text"


def test_call_text_result(mcp_server: ServerProcess) -> None:
    assert ok(run_cli(mcp_server.url, "call", "set_counter", "value=41")).stdout == "41\n"


def test_call_string_values_stay_strings(mcp_server: ServerProcess) -> None:
    result = ok(run_cli(mcp_server.url, "call", "add_note", "text=hello world", "--json"))
    assert document(result)["structuredContent"] == {"result": 1}


def test_call_args_from_stdin(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "call", "add", "--args", "-", "b=10", input='{"a": 1, "b": 2}')
    assert json.loads(ok(result).stdout)["sum"] == 11


def test_call_progress_plain_lines_on_stderr(mcp_server: ServerProcess) -> None:
    result = ok(run_cli(mcp_server.url, "call", "slow_progress", "steps=3", "--json"))
    assert document(result)["structuredContent"] == {"steps": 3, "completed": True}
    assert [line for line in result.stderr.splitlines() if line.startswith("progress")] == [
        "progress 1/3 step 1/3",
        "progress 2/3 step 2/3",
        "progress 3/3 step 3/3",
    ]


def test_call_progress_survives_a_closed_stream(mcp_server: ServerProcess) -> None:
    # The server closes the SSE response after step 1; the client resumes with GET.
    args = ("-v", "call", "slow_progress", "steps=3", "close_stream_at=1")
    result = ok(run_cli(mcp_server.url, *HANDSHAKE_ERA, *args))
    assert json.loads(result.stdout) == {"steps": 3, "completed": True}
    assert "event stream_resumed" in result.stderr
    assert re.search(r"-> GET \S+ .*last-event-id=\S+", result.stderr)
    # The stateless era has no resumable streams: the whole answer comes on the POST.
    stateless = ok(run_cli(mcp_server.url, *args))
    assert json.loads(stateless.stdout) == {"steps": 3, "completed": True}
    assert [line for line in stateless.stderr.splitlines() if line.startswith("progress")] == [
        "progress 1/3 step 1/3",
        "progress 2/3 step 2/3",
        "progress 3/3 step 3/3",
    ]
    assert "[protocol=2026-07-28]" in stateless.stderr
    assert "event stream_resumed" not in stateless.stderr
    assert "-> GET" not in stateless.stderr


def test_server_log_messages_on_stderr(mcp_server: ServerProcess) -> None:
    result = ok(
        run_cli(mcp_server.url, "call", "log_something", "level=warning", "message=disk low")
    )
    assert result.stdout == "disk low\n"
    assert "server [warning] example: disk low" in result.stderr


def test_resources(mcp_server: ServerProcess) -> None:
    text = ok(run_cli(mcp_server.url, "resources")).stdout
    assert re.search(r"^state://counter\s+counter_resource\s+application/json", text, re.M)
    assert re.search(r"^notes://\{index\}\s+note_resource\s+text/plain", text, re.M)
    listed = document(ok(run_cli(mcp_server.url, "resources", "--json")))
    assert [r["uri"] for r in listed["resources"]] == ["state://counter"]
    assert [t["uriTemplate"] for t in listed["resourceTemplates"]] == ["notes://{index}"]


def test_read(mcp_server: ServerProcess) -> None:
    text = ok(run_cli(mcp_server.url, "read", "state://counter")).stdout
    assert json.loads(text)["counter"] == 0
    read = document(ok(run_cli(mcp_server.url, "read", "state://counter", "--json")))
    assert read["contents"][0]["mimeType"] == "application/json"


def test_prompts_and_prompt(mcp_server: ServerProcess) -> None:
    text = ok(run_cli(mcp_server.url, "prompts")).stdout
    assert re.search(r"^greet\s+name, style\?\s+A greeting prompt", text, re.M)
    assert (
        document(ok(run_cli(mcp_server.url, "prompts", "--json")))["prompts"][0]["name"] == "greet"
    )
    rendered = ok(run_cli(mcp_server.url, "prompt", "greet", "name=Ada", "style=formal")).stdout
    assert "[user]\nWrite a formal greeting for Ada." in rendered
    got = document(ok(run_cli(mcp_server.url, "prompt", "greet", "name=Ada", "--json")))
    assert got["messages"][0]["content"]["text"] == "Write a friendly greeting for Ada."


def test_ping(mcp_server: ServerProcess) -> None:
    assert re.fullmatch(
        rf"pong from {re.escape(mcp_server.url)} in \d+\.\d ms\n",
        ok(run_cli(mcp_server.url, "ping")).stdout,
    )
    pong = document(ok(run_cli(mcp_server.url, "ping", "--json")))
    assert pong["endpoint"] == mcp_server.url and pong["roundTripMs"] >= 0


def test_headers_are_sent(mcp_server: ServerProcess) -> None:
    result = ok(
        run_cli(mcp_server.url, "-vv", "-H", "Authorization: Bearer t0ken", "ping", "--json")
    )
    assert document(result)["endpoint"] == mcp_server.url
    assert "-> POST" in result.stderr


def test_verbose_trace_shows_the_session_and_exchanges(mcp_server: ServerProcess) -> None:
    result = ok(run_cli(mcp_server.url, "info", "--json", "-v", *HANDSHAKE_ERA))
    session = document(result)["sessionId"]
    trace = result.stderr
    assert f"<- 200 POST {mcp_server.url}" in trace
    assert f"session={session}" in trace
    assert "protocol=2025-11-25" in trace
    assert re.search(r"sse event id=\S+ result id=1", trace)
    assert f"event session_started endpoint={mcp_server.url} session={session}" in trace
    assert re.search(rf"-> DELETE {re.escape(mcp_server.url)}", trace)


def test_verbose_trace_of_the_stateless_era(mcp_server: ServerProcess) -> None:
    result = ok(run_cli(mcp_server.url, "info", "--json", "-v"))
    assert document(result)["sessionId"] is None
    trace = result.stderr
    url = re.escape(mcp_server.url)
    assert re.search(
        rf"-> POST {url}\s+server/discover \(request id=1\)\s+\[protocol=2026-07-28\]", trace
    )
    assert f"<- 200 POST {mcp_server.url}" in trace
    assert f"event session_started endpoint={mcp_server.url} protocol_version=2026-07-28" in trace
    # No handshake, no session id on any exchange, nothing to DELETE at the end.
    assert " initialize (request id=" not in trace
    assert "session=" not in trace
    assert "-> DELETE" not in trace


def test_python_dash_m_runs_the_same_cli(mcp_server: ServerProcess) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_resilient", mcp_server.url, "ping", "--json"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["endpoint"] == mcp_server.url


def test_console_script_is_installed() -> None:
    if len(mcp_call_argv()) != 1:
        pytest.skip("the mcp-call console script is not installed (pip install -e .)")
    proc = subprocess.run(
        [*mcp_call_argv(), "--help"], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: mcp-call [options] URL [URL ...] COMMAND [ARGS]")
