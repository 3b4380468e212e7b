"""A script that opens a ``SyncResilientClient`` and never closes it must still exit.

Before: the portal thread's event loop never ended, and Python's join of its worker
threads at exit waited for it forever, in both eras. Now the client closes itself first
(bounded), so the session ends on the server too. A real subprocess, a real server, a
bounded wait.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.rig import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
EXIT_BOUND = 45.0  # the script exits within seconds; past this it hangs (the old bug)

SCRIPT = textwrap.dedent(
    """
    import sys
    from mcp_resilient import SyncResilientClient

    def on_event(event):
        if event.kind == "closed":
            print("closed", event.endpoint, flush=True)

    client = SyncResilientClient(sys.argv[1], protocol_version=sys.argv[2], on_event=on_event)
    client.open()
    print("sum", client.call_tool("add", {"a": 1, "b": 2}).structured_content["sum"], flush=True)
    # no client.close(): the interpreter exits with the client open
    """
)


@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
def test_an_unclosed_sync_client_does_not_hang_the_exit(
    mcp_server: ServerProcess, version: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, mcp_server.url, version],
            capture_output=True,
            text=True,
            timeout=EXIT_BOUND,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the script did not exit within {EXIT_BOUND} s: {exc.stdout!r}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sum 3.0", done.stdout
    assert lines[1] == f"closed {mcp_server.url}", done.stdout  # it closed itself
