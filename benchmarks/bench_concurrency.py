"""Many calls at once through one client: ours and the official ``mcp`` client side by side.

One FastMCP server (``bench_server.py``, tool ``sleep(seconds)``) runs under uvicorn in its
own process on a free loopback port. For each client and each N, a fresh child process
opens one client, fires N concurrent ``sleep`` calls and waits for all of them. The ideal
wall time is the tool's own sleep; the table shows wall / ideal, the calls that failed, the
child's peak RSS and the memory per call in flight (peak RSS minus the RSS with the client
open and idle, over N).

The ``floor`` row is a bare client (asyncio sockets, one hand-written POST per call): the
time it leaves above the ideal is the server's own. One FastMCP worker spends about 3 ms
of CPU per stateless call, so against one worker no client reaches 1.5x at 1,000 on a
2-core machine; ``--server-workers 2`` runs the server as ``uvicorn --workers 2`` would
(the stateless era needs no affinity), which lets the clients' own cost show.

    .venv/bin/python benchmarks/bench_concurrency.py                  # 100, 1000, 10000
    .venv/bin/python benchmarks/bench_concurrency.py --sizes 100,1000 --sleep 5
    .venv/bin/python benchmarks/bench_concurrency.py --sizes 1000 --server-workers 2
    .venv/bin/python benchmarks/bench_concurrency.py --json

10,000 calls at once need 10,000 sockets in the client and as many in the server: the
benchmark raises its soft ``RLIMIT_NOFILE`` to the hard limit (both children inherit it)
and says so; with a hard limit under 10,500 the 10,000 row is skipped. At 10,000 the
server's own CPU (about a core-millisecond per call) dominates a short sleep, so that row
sleeps ``--sleep-large`` seconds (default 30). A benchmark, not a test: it exits 0 when it
ran, whatever the figures; every child has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_call import running_server  # noqa: E402  (a sibling script, not a package)

TARGET = 1.5
"""Ours on the defaults, at 1,000 calls: at most this multiple of the tool's own time."""
LARGE = 10_000
FDS_FOR_LARGE = LARGE + 500  # per process: the client and the server each hold N sockets
CLIENTS = {
    "floor": "bare asyncio sockets, one connection per call (the server's floor)",
    "ours": "ResilientClient(url), defaults",
    "ours-10k": "ResilientClient(url, max_connections=10_000)",
    "mcp": "mcp.Client(url) (official SDK), defaults",
}


@dataclass
class Row:
    client: str
    n: int
    sleep: float
    wall: float | None = None
    errors: int = 0
    first_error: str = ""
    peak_rss_mb: float | None = None
    idle_rss_mb: float | None = None
    client_cpu: float | None = None  # this child's CPU seconds during the fan-out
    server_cpu: float | None = None  # the server's CPU seconds during it
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if self.wall is None else self.wall / self.sleep

    @property
    def kb_per_call(self) -> float | None:
        if self.peak_rss_mb is None or self.idle_rss_mb is None:
            return None
        return (self.peak_rss_mb - self.idle_rss_mb) * 1024 / self.n


# -- the child: one client, N calls ------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class BareClient:
    """The floor: each call one new loopback connection, one POST written by hand (the
    stateless era's headers and ``_meta``), read until its JSON answer is whole. What no
    client can beat against this server: the wall time left is the server's own."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path
        self.next_id = 0

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> None:
        self.next_id += 1
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bare", "version": "0"},
        }
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": self.next_id,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments, "_meta": meta},
            }
        ).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
            f"MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {name}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(head + body)
            answer = await reader.read(-1)  # Connection: close: the server ends the answer
        finally:
            writer.close()
        if not answer.startswith(b"HTTP/1.1 200") or b'"result"' not in answer:
            raise RuntimeError(f"bare client got {answer[:60]!r}")


async def _fan_out(client: Any, n: int, sleep: float, row: Row) -> None:
    import anyio

    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await client.call_tool("sleep", {"seconds": sleep})
        except Exception as exc:
            errors.append(exc)

    row.idle_rss_mb = _rss_mb()
    cpu = time.process_time()
    started = time.monotonic()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
    except BaseException as exc:  # the whole client died (an ExceptionGroup, say)
        row.note = f"client crashed: {type(exc).__name__}: {str(exc)[:160]}"
        row.errors = n - 0
        row.first_error = row.note
        return
    row.wall = time.monotonic() - started
    row.client_cpu = time.process_time() - cpu
    row.errors = len(errors)
    if errors:
        row.first_error = f"{type(errors[0]).__name__}: {str(errors[0])[:160]}"


async def _child(client_name: str, url: str, n: int, sleep: float) -> Row:
    row = Row(client_name, n, sleep)
    limit = sleep * 4 + 120
    if client_name == "floor":
        await _fan_out(BareClient(url), n, sleep, row)
    elif client_name.startswith("ours"):
        from mcp_resilient import ResilientClient

        options: dict[str, Any] = {"timeout": limit}
        if client_name == "ours-10k":
            options["max_connections"] = LARGE
        async with ResilientClient(url, **options) as client:
            await client.call_tool("sleep", {"seconds": 0})
            await _fan_out(client, n, sleep, row)
    else:
        from mcp import Client

        try:
            async with Client(url) as client:
                await client.call_tool("sleep", {"seconds": 0})
                await _fan_out(client, n, sleep, row)
        except BaseException as exc:
            if not row.note:
                row.note = f"client crashed: {type(exc).__name__}: {str(exc)[:160]}"
                row.errors = n
                row.first_error = row.note
    row.peak_rss_mb = _peak_rss_mb()
    return row


def child_main(args: argparse.Namespace) -> None:
    row = asyncio.run(_child(args.child, args.url, args.n, args.sleep))
    print("ROW " + json.dumps(asdict(row)), flush=True)


# -- the parent: a server, then one child per client and N --------------------------------


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_child(server: Any, client: str, n: int, sleep: float) -> Row:
    """One child process, one client, N calls; the server's CPU (all workers) around it."""
    before = server.cpu_seconds()
    row = _run_child(server.url, client, n, sleep)
    if row.wall is not None:
        row.server_cpu = server.cpu_seconds() - before
    return row


def _run_child(url: str, client: str, n: int, sleep: float) -> Row:
    command = [sys.executable, __file__, "--child", client, "--url", url]
    command += ["--n", str(n), "--sleep", str(sleep)]
    limit = sleep * 6 + 180
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=limit, env=os.environ.copy()
        )
    except subprocess.TimeoutExpired:
        return Row(client, n, sleep, errors=n, note=f"no result within {limit:g} s (killed)")
    for line in done.stdout.splitlines():
        if line.startswith("ROW "):
            data = json.loads(line[4:])
            return Row(**data)
    tail = (done.stderr or done.stdout)[-300:].strip().replace("\n", " | ")
    return Row(client, n, sleep, errors=n, note=f"child exited {done.returncode}: {tail}")


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_table(rows: list[Row], soft_fds: int, workers: int) -> None:
    print(
        f"\nRLIMIT_NOFILE soft limit in the children: {soft_fds}; load average now:"
        f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (CPU time is less noisy than wall);"
        f" server: {workers} worker process{'es' if workers > 1 else ''}, server CPU summed"
    )
    header = (
        "client",
        "N",
        "sleep s",
        "wall s",
        "wall/ideal",
        "errors",
        "peak RSS MB",
        "KB/call",
        "client CPU s",
        "server CPU s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [
            CLIENTS[row.client],
            f"{row.n:,}",
            f"{row.sleep:g}",
            _fmt(row.wall, ".2f"),
            _fmt(row.ratio, ".2f") + "x" if row.ratio is not None else "—",
            str(row.errors),
            _fmt(row.peak_rss_mb, ".0f"),
            _fmt(row.kb_per_call, ".1f"),
            _fmt(row.client_cpu, ".1f"),
            _fmt(row.server_cpu, ".1f"),
        ]
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        if row.note or row.first_error:
            print(f"  {row.client} N={row.n}: {row.note or row.first_error}")
    ours = next((r for r in rows if r.client == "ours" and r.n == 1000), None)
    floor = next((r for r in rows if r.client == "floor" and r.n == 1000), None)
    if ours is not None and ours.ratio is not None:
        met = ours.ratio <= TARGET and ours.errors == 0
        print(
            f"\nours at 1,000 on the defaults: {ours.ratio:.2f}x the ideal, {ours.errors} errors"
            f" (target <= {TARGET}x, no errors): {'met' if met else 'NOT met'}"
        )
        if floor is not None and floor.ratio is not None:
            print(
                f"bare-socket floor at 1,000 against the same server: {floor.ratio:.2f}x"
                " (what the server alone allows; ours adds"
                f" {ours.ratio - floor.ratio:+.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated N")
    parser.add_argument("--sleep", type=float, default=5.0, help="tool sleep for N < 10,000")
    parser.add_argument("--sleep-large", type=float, default=30.0, help="tool sleep at 10,000+")
    parser.add_argument("--clients", default="floor,ours,mcp", help="floor, ours, ours-10k, mcp")
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="server processes sharing the listening socket (as uvicorn --workers)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--child", choices=sorted(CLIENTS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    soft = raise_fd_limit()
    sizes = [int(part) for part in args.sizes.split(",") if part]
    clients = [name for name in args.clients.split(",") if name]
    rows: list[Row] = []
    with running_server(backlog=16384, workers=args.server_workers) as server:
        for n in sizes:
            sleep = args.sleep_large if n >= LARGE else args.sleep
            names = list(clients)
            if n >= LARGE and "ours" in names and "ours-10k" not in names:
                names.insert(names.index("ours") + 1, "ours-10k")
            for name in names:
                if n >= LARGE and soft < FDS_FOR_LARGE:
                    rows.append(
                        Row(name, n, sleep, note=f"skipped: needs ulimit -n >= {FDS_FOR_LARGE}")
                    )
                    continue
                if not args.json:
                    print(f"running {name} N={n} sleep={sleep:g}s ...", flush=True)
                rows.append(run_child(server, name, n, sleep))
    if args.json:
        print(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows], indent=2))
    else:
        print_table(rows, soft, args.server_workers)


if __name__ == "__main__":
    main()
