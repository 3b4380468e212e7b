"""A ``SyncResilientClient`` nobody closes closes itself when it is collected.

(Interpreter exit is covered with a real subprocess in tests/doors/test_sync_exit.py.)
"""

from __future__ import annotations

import gc
import threading
import time

from mcp_resilient import SyncResilientClient
from tests.unit.conftest import URL, FakeServer

BOUND = 20.0


def _portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "mcp-resilient-portal" in t.name]


def test_a_collected_sync_client_ends_its_session_and_thread(server: FakeServer) -> None:
    before = len(_portal_threads())
    client = SyncResilientClient(URL, protocol_version="2025-11-25", listen=False)
    client.open()
    client.call_tool("add", {"a": 1})
    assert len(_portal_threads()) == before + 1
    del client
    gc.collect()
    deadline = time.monotonic() + BOUND
    while len(_portal_threads()) > before:  # bounded wait on a condition
        assert time.monotonic() < deadline, "the portal thread outlived its client"
        threading.Event().wait(0.02)
    assert len(server.of_method("DELETE")) == 1  # the session ended on the server
