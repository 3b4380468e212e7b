"""What ``mcp-call call`` tells a person: timeouts by safety, unknown tools, the wait itself."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
import uuid

import pytest

from tests.cli.conftest import RUN_TIMEOUT, cli_env, mcp_call_argv, run_cli
from tests.cli.test_exit_codes import one_error_line
from tests.rig import ServerProcess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_4_timeout_of_a_read_only_call_is_a_plain_timeout(mcp_server: ServerProcess) -> None:
    # `sleep` is annotated read-only: running it twice is harmless, nothing is in doubt.
    result = run_cli(mcp_server.url, "call", "sleep", "seconds=30", "--timeout", "2")
    assert result.code == 4, result
    line = one_error_line(result)
    assert line.startswith("mcp-call: error: tools/call did not complete within 2 s"), line
    assert "try a larger --timeout" in line
    assert "outcome unknown" not in line and "check its effect" not in line
    assert "waiting for" not in result.stderr  # stderr is a pipe here: no ticker


def test_4_timeout_with_idempotent_flag(mcp_server: ServerProcess) -> None:
    gate = f"never-{uuid.uuid4().hex}"
    result = run_cli(
        mcp_server.url, "call", "increment", f"gate={gate}", "--idempotent", "--timeout", "2", "-v"
    )
    assert result.code == 4, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("mcp-call: error:")]
    assert len(errors) == 1 and "outcome unknown" not in errors[0], result
    # -v adds the traceback of the library's own error, not of a task group around it.
    assert "RequestTimeoutError" in result.stderr and "ExceptionGroup" not in result.stderr


def test_4_no_such_tool_names_the_closest(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "call", "incremnt", "by=2")
    assert result.code == 4, result
    line = one_error_line(result)
    assert line.startswith(f"mcp-call: error: no such tool 'incremnt' on {mcp_server.url}"), line
    assert "did you mean increment?" in line
    assert "isError" not in result.stderr


def test_4_no_such_tool_without_a_close_name(mcp_server: ServerProcess) -> None:
    result = run_cli(mcp_server.url, "call", "zzqx", "--json")
    assert result.code == 4, result
    assert "no such tool 'zzqx'" in one_error_line(result)
    assert "did you mean" not in result.stderr


def _run_with_tty_stderr(*args: str) -> tuple[int, str, str]:
    """Run mcp-call with stderr on a pseudo-terminal (stdout piped); all of both, bounded."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*mcp_call_argv(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            env=cli_env(),
            cwd=REPO_ROOT,
        )
    finally:
        os.close(follower)  # the child holds its own copy
    chunks: list[bytes] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                pytest.fail(f"mcp-call did not finish within {RUN_TIMEOUT}s: {b''.join(chunks)!r}")
            ready, _, _ = select.select([leader], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not data:
                break
            chunks.append(data)
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        code = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return code, stdout, b"".join(chunks).decode(errors="replace")


def test_terminal_shows_elapsed_time_while_a_silent_call_runs(mcp_server: ServerProcess) -> None:
    code, stdout, stderr = _run_with_tty_stderr(mcp_server.url, "call", "sleep", "seconds=2.5")
    assert code == 0, stderr
    assert stdout.strip() == "2.5"
    # Redrawn in place each second, then wiped before the result is printed.
    assert "\r\x1b[Kwaiting for 'sleep'...  1 s" in stderr, repr(stderr)
    assert "\r\x1b[Kwaiting for 'sleep'...  2 s" in stderr, repr(stderr)
    assert stderr.endswith("\r\x1b[K"), repr(stderr)


def test_terminal_progress_bar_carries_the_elapsed_time(mcp_server: ServerProcess) -> None:
    code, _, stderr = _run_with_tty_stderr(
        mcp_server.url, "call", "slow_progress", "steps=3", "delay=0.8"
    )
    assert code == 0, stderr
    # A tick after a progress notification redraws the bar with the time on its end.
    bar_with_clock = r"\r\x1b\[K\[[#.]+\]\s+\d+% \d/3  step \d/3  [12] s"
    assert re.search(bar_with_clock, stderr), repr(stderr)
    assert stderr.endswith("\r\x1b[K"), repr(stderr)
