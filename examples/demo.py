"""Demo: three example MCP servers sharing state, and one resilient client talking to them.

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
from collections.abc import Sequence
from pathlib import Path

from examples._launch import ServerCluster
from mcp_resilient import Event, ResilientClient


async def on_progress(progress: float, total: float | None, message: str | None) -> None:
    """Print each progress notification as it arrives."""
    print(f"  progress {progress:g}/{total:g} {message or ''}" if total else f"  {progress:g}")


def on_event(event: Event) -> None:
    """What the client does behind the scenes, as it happens."""
    if event.kind in ("session_lost", "failover", "session_resumed", "endpoint_down", "retry"):
        print(f"  [event] {event}")


async def run(cluster: ServerCluster) -> None:
    """What a client application does: connect, look around, call tools, survive a crash."""
    async with ResilientClient(cluster.urls, on_event=on_event) as client:
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

        victim = next(server for server in cluster if server.url == client.endpoint)
        print(f"\nkilling {victim.instance} (pid {victim.pid}) with SIGKILL, mid-session...")
        victim.kill()
        started = time.perf_counter()
        result = await client.call_tool("increment", {"by": 1})
        elapsed = (time.perf_counter() - started) * 1000
        print(f"increment -> {result.structured_content} ({elapsed:.0f} ms, through the crash)")
        notes = await client.call_tool("list_notes")
        print(f"list_notes -> {notes.structured_content}")
        print(f"now on {client.endpoint}, session {client.session_id}")
        if result.structured_content != {"result": 4}:
            raise RuntimeError(f"the counter did not continue: {result.structured_content}")
        stats = client.stats
        print(
            f"stats: {stats.attempts} attempts, {stats.retries} retries,"
            f" {stats.failovers} failovers, {stats.resumes} resumes"
        )


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
