"""Demo: three example MCP servers sharing state, and one resilient client talking to them.

The servers are built on the server kit (``mcp_resilient.server``): a non-idempotent
``increment`` caught in flight by a SIGKILL completes exactly once, with no error, both
when the kill comes after the server recorded the answer (it is replayed from the ledger)
and when it comes mid-run, before the commit (``increment`` is transactional: the dead
run left no trace, and the re-send runs it afresh).

    python -m examples.demo [--servers 3]

The servers share state through a temporary SQLite file (or Redis when ``REDIS_URL`` is
set). They are stopped when the demo ends, however it ends. Exit status 0 on success.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from examples._launch import ServerCluster, ServerProcess
from mcp_resilient import HANDSHAKE_VERSIONS, Event, ResilientClient

#: Set in a result's ``_meta`` when the server answered from its idempotency ledger.
REPLAYED_META_KEY = "io.github.mcp-resilient/replayed"


async def on_progress(progress: float, total: float | None, message: str | None) -> None:
    """Print each progress notification as it arrives."""
    print(f"  progress {progress:g}/{total:g} {message or ''}" if total else f"  {progress:g}")


def on_event(event: Event) -> None:
    """What the client does behind the scenes, as it happens."""
    if event.kind in ("session_lost", "failover", "session_resumed", "endpoint_down", "retry"):
        print(f"  [event] {event}")


async def run(cluster: ServerCluster) -> None:
    """What a client application does: connect, look around, call tools, survive a crash."""
    # The example keeps its counter per session, and sessions belong to the handshake era
    # (the 2026-07-28 era has none), so the demo speaks that era.
    async with ResilientClient(
        cluster.urls, on_event=on_event, protocol_version=HANDSHAKE_VERSIONS[0]
    ) as client:
        info = client.server_info
        print(f"connected to {client.endpoint}")
        print(f"  session {client.session_id}, protocol {client.protocol_version}")
        print(f"  server {info.name if info else '?'} {info.version if info else ''}")

        tools = await client.list_tools()
        print(f"{len(tools)} tools: {', '.join(t.name for t in tools)}")

        for _ in range(3):
            result = await client.call_tool("increment", {"by": 1})
            print(f"increment -> {result.structured_content}")
        await client.call_tool("add_note", {"text": "remember me"})

        print("slow_progress:")
        result = await client.call_tool(
            "slow_progress", {"steps": 5, "delay": 0.1}, progress_handler=on_progress
        )
        print(f"slow_progress -> {result.structured_content}")
        if result.is_error:
            raise RuntimeError(f"slow_progress failed: {result.content}")

        # A non-idempotent call caught by a crash: the server recorded the answer in its
        # idempotency ledger, then died before sending it. The client re-sends the call with
        # the same key to another replica, which answers from the ledger: exactly once.
        victim = next(server for server in cluster if server.url == client.endpoint)
        survivor = next(server for server in cluster if server is not victim)
        call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
        print(f"\nincrement in flight on {victim.instance}; SIGKILL once its answer is recorded...")
        started = time.perf_counter()
        outcome: dict[str, Any] = {}

        async def in_flight() -> None:
            outcome["result"] = await client.call_tool(
                "increment", {"by": 1, "call_id": call_id, "reply_gate": gate}
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_flight)
            await until(lambda: gate_state(survivor, gate, "waiting"), "the answer is recorded")
            print(f"  killing {victim.instance} (pid {victim.pid}) with SIGKILL, mid-call")
            victim.kill()
            await open_gate(survivor, gate)
        result = outcome["result"]
        elapsed = (time.perf_counter() - started) * 1000
        replayed = (result.meta or {}).get(REPLAYED_META_KEY, False)
        runs = await executions(survivor, call_id)
        print(
            f"increment -> {result.structured_content} ({elapsed:.0f} ms, through the crash;"
            f" ran {runs} time(s), answer replayed from the ledger: {replayed})"
        )
        if result.structured_content != {"result": 4}:
            raise RuntimeError(f"the counter did not continue: {result.structured_content}")
        if runs != 1:
            raise RuntimeError(f"the increment ran {runs} times, not exactly once")

        # Now a kill mid-run: the transactional increment has staged its execution record
        # and waits before its second write, so nothing is committed yet. The dead run
        # leaves no trace, and the client's re-send (same key) runs it afresh elsewhere.
        victim = next(server for server in cluster if server.url == client.endpoint)
        survivor = next(s for s in cluster if s is not victim and s.running)
        call_id, hold = uuid.uuid4().hex, uuid.uuid4().hex
        print(f"\nincrement in flight on {victim.instance}; SIGKILL mid-run, before it commits...")
        started = time.perf_counter()

        async def mid_run() -> None:
            outcome["mid"] = await client.call_tool(
                "increment", {"by": 1, "call_id": call_id, "hold": hold, "hold_at": "between"}
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(mid_run)
            await until(lambda: gate_state(survivor, hold, "waiting"), "the run is mid-way")
            applied = await executions(survivor, call_id)
            print(
                f"  killing {victim.instance} (pid {victim.pid}) with SIGKILL mid-run"
                f" (applied so far: {applied})"
            )
            victim.kill()
            await open_gate(survivor, hold)
        result = outcome["mid"]
        elapsed = (time.perf_counter() - started) * 1000
        runs = await executions(survivor, call_id)
        print(
            f"increment -> {result.structured_content} ({elapsed:.0f} ms, through the crash;"
            f" applied {runs} time(s), no error)"
        )
        if result.is_error or result.structured_content != {"result": 5} or runs != 1:
            raise RuntimeError(f"the mid-run kill did not end in one increment: {result}")
        notes = await client.call_tool("list_notes")
        print(f"list_notes -> {notes.structured_content}")
        print(f"now on {client.endpoint}, session {client.session_id}")
        counter = await client.call_tool("get_counter")
        if counter.structured_content != {"result": 5}:
            raise RuntimeError(f"the counter is {counter.structured_content}, not 5")
        stats = client.stats
        print(
            f"stats: {stats.attempts} attempts, {stats.retries} retries,"
            f" {stats.failovers} failovers, {stats.resumes} resumes"
        )


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Poll a condition (bounded): the demo never waits on a fixed sleep."""
    with anyio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - the condition lives in another process
            await anyio.sleep(0.02)


async def gate_state(server: ServerProcess, gate: str, field: str) -> bool:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        return bool((await http.get(f"{server.base_url}/gates/{gate}")).json()[field])


async def open_gate(server: ServerProcess, gate: str) -> None:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        (await http.post(f"{server.base_url}/gates/{gate}")).raise_for_status()


async def executions(server: ServerProcess, call_id: str) -> int:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        return int((await http.get(f"{server.base_url}/executions/{call_id}")).json()["count"])


def main(argv: Sequence[str] | None = None) -> int:
    """Start the servers, run the client, stop the servers."""
    parser = argparse.ArgumentParser(description="mcp-resilient demo")
    parser.add_argument("--servers", type=int, default=3, help="how many server instances")
    args = parser.parse_args(argv)
    # SIGTERM would end the process without unwinding; as SystemExit, the with-blocks
    # below still stop the servers.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))

    with tempfile.TemporaryDirectory(prefix="mcp-resilient-demo-") as tmp:
        redis_url = os.environ.get("REDIS_URL")
        env = {"REDIS_URL": redis_url} if redis_url else {"STATE_DB": str(Path(tmp, "state.db"))}
        print(f"starting {args.servers} servers ({'redis' if redis_url else 'sqlite'} state)...")
        with ServerCluster(args.servers, env=env, prefix="demo", log_dir=tmp) as cluster:
            for server in cluster:
                print(f"  {server.instance}: {server.url} (pid {server.pid})")
            try:
                asyncio.run(run(cluster))
            except Exception as exc:
                print(f"demo failed: {exc!r}", file=sys.stderr)
                for server in cluster:
                    print(f"--- {server.instance} log:\n{server.log_tail(20)}", file=sys.stderr)
                return 1
    print("servers stopped; done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
