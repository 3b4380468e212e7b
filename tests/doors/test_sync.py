"""SyncResilientClient against real example servers: the async client's scenarios, blocking."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import mcp_types
import pytest

from mcp_resilient import (
    ClientClosedError,
    Event,
    OutcomeUnknownError,
    RequestTimeoutError,
    SyncResilientClient,
)
from tests.rig import ServerCluster, ServerProcess

from ._kill import BOUND, answered_by, crash_all


def executions(server: ServerProcess, call_id: str) -> int:
    response = httpx.get(f"{server.base_url}/executions/{call_id}", timeout=10)
    response.raise_for_status()
    return int(response.json()["count"])


def open_gate(server: ServerProcess, name: str) -> None:
    httpx.post(f"{server.base_url}/gates/{name}", timeout=10).raise_for_status()


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        threading.Event().wait(0.05)  # poll interval of a bounded wait on a condition


def test_every_public_method(mcp_server: ServerProcess) -> None:
    events: list[Event] = []
    with SyncResilientClient(mcp_server.url, on_event=events.append) as client:
        assert client.endpoint == mcp_server.url
        assert client.protocol_version
        assert client.server_info is not None and client.server_info.name == "mcp-resilient-example"
        assert client.server_capabilities is not None
        assert client.instructions and "Stateful example server" in client.instructions
        tools = {tool.name for tool in client.list_tools()}
        assert {"add", "increment", "get_counter"} <= tools
        assert client.cached_tool("no-such-tool") is None
        added = client.call_tool("add", {"a": 1, "b": 2})
        assert added.structured_content == {"a": 1, "b": 2, "sum": 3}
        assert client.call_tool("fail", {"message": "nope"}).is_error is True
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        client.call_tool("slow_progress", {"steps": 3}, progress_handler=on_progress)
        assert seen == [1, 2, 3]
        client.call_tool(
            "slow_progress", {"steps": 2}, progress_handler=lambda p, t, m: seen.append(p)
        )
        assert seen == [1, 2, 3, 1, 2]  # a plain function works too
        resources = client.list_resources()
        assert "state://counter" in [str(r.uri) for r in resources]
        templates = client.list_resource_templates()
        assert "notes://{index}" in [t.uri_template for t in templates]
        read = client.read_resource("state://counter")
        assert isinstance(read.contents[0], mcp_types.TextResourceContents)
        assert "counter" in read.contents[0].text
        assert "greet" in [p.name for p in client.list_prompts()]
        prompt = client.get_prompt("greet", {"name": "Ada"})
        assert "Ada" in str(prompt.messages[0].content)
        client.ping()
        client.set_logging_level("warning")
        client.send_roots_list_changed()
        assert client.stats.attempts >= 10
    assert events[-1].kind == "closed"
    with pytest.raises(ClientClosedError):
        client.ping()


def test_failover_after_the_backend_dies(cluster: ServerCluster) -> None:
    with SyncResilientClient(cluster.urls, timeout=BOUND) as client:
        victim = answered_by(cluster, client.call_tool("whoami"))
        victim.kill()
        added = client.call_tool("add", {"a": 2, "b": 3})
        assert answered_by(cluster, client.call_tool("whoami")) is not victim
        assert added.structured_content == {"a": 2, "b": 3, "sum": 5}


def test_non_idempotent_call_killed_mid_call_is_outcome_unknown(cluster: ServerCluster) -> None:
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    witness = cluster[0]
    with SyncResilientClient(cluster.urls, timeout=BOUND) as client:
        client.list_tools()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(
                client.call_tool, "increment", {"by": 1, "call_id": call_id, "gate": gate}
            )
            wait_for(lambda: executions(witness, call_id) >= 1, "increment committed")
            crash_all(cluster)  # the backend under the call dies, and comes back
            open_gate(witness, gate)
            with pytest.raises(OutcomeUnknownError) as caught:
                future.result(timeout=BOUND)
        assert executions(witness, call_id) == 1, "a non-idempotent call ran twice"
        assert caught.value.tool == "increment"
        assert client.call_tool("add", {"a": 1, "b": 1}).is_error is False


def test_deadline_is_the_async_clients(mcp_server: ServerProcess) -> None:
    with SyncResilientClient(mcp_server.url) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            client.call_tool("sleep", {"seconds": 30}, timeout=0.5)
        assert time.monotonic() - started < 15  # generous: it must not wait the 30 s
        assert client.call_tool("add", {"a": 1, "b": 1}).is_error is False


def test_eight_threads_at_once(mcp_server: ServerProcess) -> None:
    barrier = threading.Barrier(8, timeout=BOUND)
    with SyncResilientClient(mcp_server.url) as client:

        def work(i: int) -> float:
            barrier.wait()
            result = client.call_tool("add", {"a": i, "b": 100}, timeout=BOUND)
            assert result.structured_content is not None
            return float(result.structured_content["sum"])

        with ThreadPoolExecutor(8) as pool:
            sums = sorted(pool.map(work, range(8)))
        threads = {t.name for t in threading.enumerate()}
    assert sums == [100.0 + i for i in range(8)]
    assert "mcp-resilient-portal" in threads


def test_close_from_another_thread_while_a_call_runs(mcp_server: ServerProcess) -> None:
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    client = SyncResilientClient(mcp_server.url, timeout=BOUND).open()
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            client.call_tool("increment", {"by": 1, "call_id": call_id, "gate": gate})
        except BaseException as exc:  # the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        wait_for(lambda: executions(mcp_server, call_id) >= 1, "the call is in flight")
        closer = threading.Thread(target=client.close)
        closer.start()
        closer.join(BOUND)
        assert not closer.is_alive(), "close() hung"
        thread.join(BOUND)
        assert not thread.is_alive(), "the running call did not end when the client closed"
    finally:
        open_gate(mcp_server, gate)
    assert len(errors) == 1 and isinstance(errors[0], ClientClosedError), errors
    client.close()  # twice is fine
    with pytest.raises(ClientClosedError):
        client.ping()


def test_works_where_an_event_loop_already_runs(mcp_server: ServerProcess) -> None:
    """As in a Jupyter cell: a plain function, called on a thread whose loop is running."""

    def cell() -> Any:
        with SyncResilientClient(mcp_server.url) as client:
            return client.call_tool("add", {"a": 2, "b": 3}).structured_content

    async def notebook() -> Any:
        asyncio.get_running_loop()  # there is a running loop on this thread
        return cell()

    assert asyncio.run(notebook()) == {"a": 2, "b": 3, "sum": 5}


def test_bad_arguments_fail_at_once() -> None:
    with pytest.raises(ValueError):
        SyncResilientClient([])
    with pytest.raises(ValueError):
        SyncResilientClient("ftp://127.0.0.1/mcp")
