"""Client memory over thousands of streamed, resumed tool calls: does anything grow?

One example server (``examples.stateful_server`` started with ``examples._launch``;
in-memory event store, SSE retry hint of a few milliseconds) and, between it and the
client, the fault proxy of the test rig (``tests/rig/faultproxy.py``) in a process of its
own. The proxy cuts each call's SSE answer right after its first progress event (once
the server has finished that answer), so every call is resumed once: GET with
``Last-Event-ID``, a replay, and the per-stream bookkeeping (``StreamCursor.seen_ids``)
that must be freed with the stream.

This process runs only the client. tracemalloc traces from the start; snapshots are
taken after a warm-up and at the end (after ``gc.collect()``), and the report gives the
difference of the traced totals, the lines that grew most, and VmRSS from
``/proc/self/status`` at both points. RSS is informative only: CPython rarely returns
freed memory to the OS, and with tracemalloc on it includes tracemalloc's own
bookkeeping (about 1.5 MiB here); ``--rss-only`` measures RSS with tracemalloc off. The
exit status is 1 if the traced growth exceeds ``--max-growth-mib`` (or a call came back
wrong), so CI can run this as a check.

Run: ``.venv/bin/python benchmarks/bench_memory.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from examples._launch import ServerProcess  # noqa: E402
from mcp_resilient import HANDSHAKE_VERSIONS, ProgressHandler, ResilientClient  # noqa: E402
from tests.rig.faultproxy import FaultProxyProcess  # noqa: E402

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]

MIB = 1024 * 1024
CALL_TIMEOUT = 60.0
"""Deadline of one call (seconds)."""
PHASE_TIMEOUT = 1800.0
"""Bound on one phase (warm-up or measurement), seconds."""


@dataclass
class Figures:
    """What one run measured."""

    calls: int = 0
    warmup: int = 0
    resumes: int = 0
    traced_after_warmup: int = 0
    traced_at_end: int = 0
    rss_after_warmup_kib: int = 0
    rss_at_end_kib: int = 0
    top_growth: list[str] = field(default_factory=list)
    proxy: dict[str, Any] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def traced_growth(self) -> int:
        return self.traced_at_end - self.traced_after_warmup

    @property
    def rss_growth_kib(self) -> int:
        return self.rss_at_end_kib - self.rss_after_warmup_kib

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "warmup": self.warmup,
            "measured_calls": self.calls - self.warmup,
            "stream_resumes": self.resumes,
            "traced_after_warmup_bytes": self.traced_after_warmup,
            "traced_at_end_bytes": self.traced_at_end,
            "traced_growth_bytes": self.traced_growth,
            "traced_growth_per_call_bytes": round(
                self.traced_growth / max(1, self.calls - self.warmup), 2
            ),
            "rss_after_warmup_kib": self.rss_after_warmup_kib,
            "rss_at_end_kib": self.rss_at_end_kib,
            "rss_growth_kib": self.rss_growth_kib,
            "top_growth": self.top_growth,
            "proxy": self.proxy,
            "wrong_calls": self.wrong[:10],
            "seconds": round(self.seconds, 1),
        }


def rss_kib() -> int:
    """VmRSS of this process in KiB (0 where /proc is not available)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    # The snapshots themselves are traced: leave tracemalloc's own frames out.
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )


def _total(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in snapshot.statistics("filename"))


def _recorder(seen: list[float]) -> ProgressHandler:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    return on_progress


async def run_calls(
    client: ResilientClient, count: int, concurrency: int, steps: int, figures: Figures
) -> None:
    """``count`` calls of ``slow_progress(steps)``, ``concurrency`` at a time; checks each."""
    expected = [float(k) for k in range(1, steps + 1)]
    jobs: Iterator[int] = iter(range(count))

    async def worker() -> None:
        for index in jobs:
            seen: list[float] = []
            result = await client.call_tool(
                "slow_progress",
                {"steps": steps},
                progress_handler=_recorder(seen),
                timeout=CALL_TIMEOUT,
            )
            if seen != expected or result.structured_content != {
                "steps": steps,
                "completed": True,
            }:
                figures.wrong.append(f"call {index}: progress {seen}, result {result}")
            figures.calls += 1

    with anyio.fail_after(PHASE_TIMEOUT):
        async with anyio.create_task_group() as group:
            for _ in range(concurrency):
                group.start_soon(worker)


async def measure(
    url: str, *, calls: int, warmup: int, concurrency: int, steps: int, top: int
) -> Figures:
    """Warm up, snapshot, run the rest, snapshot; the figures of the difference."""
    figures = Figures(warmup=warmup)

    def on_event(event: Any) -> None:
        if event.kind == "stream_resumed":
            figures.resumes += 1

    started = time.monotonic()
    if not tracemalloc.is_tracing():  # --rss-only
        async with ResilientClient(url, protocol_version=HANDSHAKE, on_event=on_event) as client:
            await run_calls(client, warmup, concurrency, steps, figures)
            gc.collect()
            figures.rss_after_warmup_kib = rss_kib()
            await run_calls(client, calls - warmup, concurrency, steps, figures)
            gc.collect()
            figures.rss_at_end_kib = rss_kib()
        figures.seconds = time.monotonic() - started
        return figures
    with tempfile.TemporaryDirectory(prefix="bench-mem-snap-") as scratch:
        # The first snapshot waits on disk, so it is not in the second one's RSS.
        parked = Path(scratch) / "after-warmup.snapshot"
        async with ResilientClient(url, protocol_version=HANDSHAKE, on_event=on_event) as client:
            await run_calls(client, warmup, concurrency, steps, figures)
            gc.collect()
            figures.rss_after_warmup_kib = rss_kib()
            before = _snapshot()
            figures.traced_after_warmup = _total(before)
            before.dump(str(parked))
            del before
            await run_calls(client, calls - warmup, concurrency, steps, figures)
            gc.collect()
            figures.rss_at_end_kib = rss_kib()
            after = _snapshot()
            figures.traced_at_end = _total(after)
            before = tracemalloc.Snapshot.load(str(parked))
            figures.top_growth = [str(stat) for stat in after.compare_to(before, "lineno")[:top]]
            del before, after
    figures.seconds = time.monotonic() - started
    return figures


def run(args: argparse.Namespace) -> Figures:
    env = {
        "MCP_RETRY_MS": str(args.retry_ms),
        "MCP_EVENT_STORE": "memory",
        "STATE_DB": str(Path(args.workdir) / "state.sqlite3"),
    }
    proxy_args = [
        "--methods",
        "POST",
        "--hold-methods",
        "POST",
        "--after-events",
        "2",  # the priming event and the first progress notification
        "--probability",
        str(args.cut_probability),
    ]
    if args.seed is not None:
        proxy_args += ["--seed", str(args.seed)]
    with ExitStack() as stack:
        server = stack.enter_context(
            ServerProcess(
                instance="bench-memory", env=env, log_path=Path(args.workdir) / "server.log"
            )
        )
        server.start_healthy()
        url = server.url
        proxy: FaultProxyProcess | None = None
        if args.cut_probability > 0:
            proxy = stack.enter_context(FaultProxyProcess(server.host, server.port, proxy_args))
            url = proxy.url
        if not args.rss_only:
            tracemalloc.start(args.frames)
        try:
            figures = anyio.run(
                lambda: measure(
                    url,
                    calls=args.calls,
                    warmup=args.warmup,
                    concurrency=args.concurrency,
                    steps=args.steps,
                    top=args.top,
                )
            )
        finally:
            tracemalloc.stop()
        if proxy is not None:
            figures.proxy = {"seed": proxy.seed, **proxy.stop()}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="total calls (warm-up included)")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="progress notifications per call")
    parser.add_argument(
        "--cut-probability",
        type=float,
        default=1.0,
        help="share of calls whose answer the proxy cuts (0: no proxy, no resumption)",
    )
    parser.add_argument("--retry-ms", type=int, default=5, help="the server's SSE retry hint")
    parser.add_argument("--seed", type=int, default=None, help="the proxy's RNG seed")
    parser.add_argument("--max-growth-mib", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per trace")
    parser.add_argument("--top", type=int, default=10, help="lines of growth to report")
    parser.add_argument(
        "--rss-only",
        action="store_true",
        help="tracemalloc off: report RSS only (fails only on wrong calls)",
    )
    parser.add_argument("--workdir", default=None, help="server state and logs (default: tmp)")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.calls:
        parser.error("need 0 <= --warmup < --calls")
    with ExitStack() as stack:
        if args.workdir is None:
            args.workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mem-"))
        figures = run(args)
    report = figures.as_dict()
    report["max_growth_bytes"] = int(args.max_growth_mib * MIB)
    print(json.dumps(report, indent=2))
    ok = not figures.wrong and (args.rss_only or figures.traced_growth <= args.max_growth_mib * MIB)
    if figures.wrong:
        print(f"FAIL: {len(figures.wrong)} calls came back wrong", file=sys.stderr)
    elif not ok:
        print(
            f"FAIL: traced memory grew by {figures.traced_growth / MIB:.2f} MiB over"
            f" {figures.calls - figures.warmup} calls (bound {args.max_growth_mib} MiB)",
            file=sys.stderr,
        )
    else:
        traced = "" if args.rss_only else f"traced growth {figures.traced_growth / 1024:.1f} KiB, "
        print(
            f"OK: {traced}RSS growth {figures.rss_growth_kib} KiB"
            f" over {figures.calls - figures.warmup} calls",
            file=sys.stderr,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
