"""ResilientClient's own Python cost per ``tools/call``, without sockets or a server.

A companion to ``bench_call.py`` for working on the hot path: both the raw-httpx
floor and ``ResilientClient`` talk to an in-process ``httpx.MockTransport`` that
answers like FastMCP (SSE by default), so what remains is client-side Python work
and the figures barely move between runs (the loopback benchmark moves by several
per cent, as much as the margin being chased). It cannot show network effects
such as a connection not being reused: confirm those with ``bench_call.py``.

Run: ``.venv/bin/python benchmarks/bench_overhead.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from bench_call import PROTOCOL_VERSION, TOOL_ARGS, RawClient

from mcp_resilient import ResilientClient

URL = "http://bench.invalid/mcp"
SESSION_ID = "bench-session"


def _answer(message: dict[str, Any], *, sse: bool) -> httpx.Response:
    if message["method"] == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": True}},
            "serverInfo": {"name": "bench", "version": "0"},
        }
    else:  # tools/call, shaped like FastMCP's answer to add(1, 2)
        result = {
            "_meta": {"fastmcp": {"wrap_result": True}},
            "content": [{"text": "3", "type": "text"}],
            "isError": False,
            "structuredContent": {"result": 3},
        }
    body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
    if sse:
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream", "mcp-session-id": SESSION_ID},
            content=b"event: message\r\ndata: " + body + b"\r\n\r\n",
        )
    return httpx.Response(
        200,
        headers={"content-type": "application/json", "mcp-session-id": SESSION_ID},
        content=body,
    )


def make_handler(*, sse: bool) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(405)  # no listen stream: nothing to do in the background
        if request.method == "DELETE":
            return httpx.Response(200)
        message = json.loads(request.content)
        if "id" not in message:
            return httpx.Response(202)
        return _answer(message, sse=sse)

    return handler


async def _time(call: Callable[[], Awaitable[object]], calls: int, warmup: int) -> float:
    for _ in range(warmup):
        await call()
    gc.collect()
    start = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - start) / calls * 1e6


async def measure(name: str, *, sse: bool, calls: int, warmup: int) -> float:
    async with httpx.AsyncClient(transport=httpx.MockTransport(make_handler(sse=sse))) as http:
        if name == "raw-httpx":
            raw = RawClient(http, URL)
            await raw.open()
            return await _time(raw.call, calls, warmup)
        async with ResilientClient(URL, http_client=http, listen=True) as client:

            def call() -> Awaitable[object]:
                return client.call_tool("add", TOOL_ARGS)

            return await _time(call, calls, warmup)


async def run(*, sse: bool, calls: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"raw-httpx": [], "resilient": []}
    for index in range(rounds):
        order = list(samples) if index % 2 == 0 else list(reversed(samples))
        for name in order:
            samples[name].append(await measure(name, sse=sse, calls=calls, warmup=warmup))
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json-response", action="store_true", help="answer JSON, not SSE")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    if min(args.calls, args.rounds) <= 0 or args.warmup < 0:
        parser.error("--calls and --rounds must be positive, --warmup zero or more")
    sse = not args.json_response
    samples = asyncio.run(run(sse=sse, calls=args.calls, warmup=args.warmup, rounds=args.rounds))
    floor = statistics.median(samples["raw-httpx"])
    ours = statistics.median(samples["resilient"])
    if args.json:
        print(
            json.dumps(
                {
                    "answer": "SSE" if sse else "JSON",
                    "calls": args.calls,
                    "rounds": args.rounds,
                    "raw_us_per_call": floor,
                    "resilient_us_per_call": ours,
                    "overhead_us_per_call": ours - floor,
                    "samples": samples,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"In-process (httpx.MockTransport, answers {'SSE' if sse else 'JSON'}):"
        f" {args.calls} calls x {args.rounds} rounds, median CPU µs per tools/call"
    )
    print(f"  raw-httpx  {floor:7.1f}")
    print(f"  resilient  {ours:7.1f}   (+{ours - floor:.1f} µs of ResilientClient's own work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
