"""What the idempotency ledger and transactional tools cost a healthy server, per call.

    .venv/bin/python benchmarks/bench_ledger.py                 # 300 calls x 5 rounds per store
    .venv/bin/python benchmarks/bench_ledger.py --calls 50 --rounds 2 --stores sqlite
    .venv/bin/python benchmarks/bench_ledger.py --stores all    # + Cluster, Sentinel, PostgreSQL

Starts the example server (``examples/stateful_server.py``, built on the server kit) in
its own process twice per store (SQLite file; Redis on a throwaway ``redis-server``; a
Redis Cluster of 3 primaries with a replica each and a primary/replica pair under Sentinel,
each with ``WAIT`` for one replica and without (``-nowait``); PostgreSQL): once
with plain tools (``MCP_TRANSACTIONAL=0``) and once with its ``@transactional`` tools.
Over one handshake-era session per server, made with plain httpx, it sends sequential
``increment`` calls (not idempotent, so the ledger engages) in three variants:

- ``plain``: the plain tool, no idempotency key (what a server without the kit's
  guarantees pays);
- ``keyed``: the plain tool under a key (the ledger: claim, run, complete);
- ``transactional``: the transactional tool under a key (claim, staged reads, one commit
  with the outcome).

Batches of the variants alternate within every round, so drift hits all alike. It reports,
per store: the server's CPU time per call (from /proc, user + system) and the wall time
per call, and each variant as a ratio to ``plain``, and per replica: calls per second for
one sequential client, and calls per CPU-second of the replica (its ceiling when the CPU
is the limit). A benchmark, not a test: it asserts
nothing about timings and exits 0 when it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples._launch import RedisProcess, ServerProcess, redis_server_path
from examples._services import (
    PostgresProcess,
    RedisClusterProcess,
    RedisSentinelSet,
    postgres_bindir,
)
from mcp_resilient._classify import IDEMPOTENCY_META_KEY

PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawSession:
    """A handshake-era MCP session by hand: nothing between the benchmark and the wire."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30, trust_env=False)
        self.headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        self.ids = 0
        reply = self.post(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "bench-ledger", "version": "0"},
            },
        )
        assert reply["result"]["protocolVersion"] == PROTOCOL, reply
        caps = reply["result"]["capabilities"].get("experimental") or {}
        assert "io.github.mcp-resilient/idempotency" in caps, "the server has no ledger"
        self.http.post(
            url,
            headers=self.headers,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        ).raise_for_status()

    def post(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        response = self.http.post(
            self.url,
            headers=self.headers,
            json={"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params},
        )
        response.raise_for_status()
        if "Mcp-Session-Id" in response.headers:
            self.headers["Mcp-Session-Id"] = response.headers["Mcp-Session-Id"]
            self.headers["MCP-Protocol-Version"] = PROTOCOL
        body: dict[str, Any] = response.json()
        return body

    def increment(self, keyed: bool) -> None:
        params: dict[str, Any] = {"name": "increment", "arguments": {"by": 1}}
        if keyed:
            params["_meta"] = {IDEMPOTENCY_META_KEY: uuid.uuid4().hex}
        reply = self.post("tools/call", params)
        assert reply["result"].get("isError") is False, reply

    def close(self) -> None:
        self.http.close()


VARIANTS = {"plain": ("plain", False), "keyed": ("plain", True), "transactional": ("tx", True)}
"""variant -> (which server, keyed)."""


def batch(session: RawSession, pid: int, calls: int, keyed: bool) -> tuple[float, float]:
    """(server CPU µs/call, wall µs/call) for ``calls`` sequential increments."""
    cpu, wall = server_cpu(pid), time.perf_counter()
    for _ in range(calls):
        session.increment(keyed)
    wall = time.perf_counter() - wall
    return (server_cpu(pid) - cpu) / calls * 1e6, wall / calls * 1e6


def measure(env: dict[str, str], calls: int, rounds: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        env = {**env, "MCP_JSON_RESPONSE": "1"}
        if "REDIS_URL" not in env and "POSTGRES_URL" not in env:
            env["STATE_DB"] = str(Path(tmp, "state.db"))
        plain_env = {**env, "MCP_TRANSACTIONAL": "0"}
        with (
            ServerProcess(
                instance="plain", env=plain_env, log_path=Path(tmp, "plain.log")
            ) as plain,
            ServerProcess(instance="tx", env=env, log_path=Path(tmp, "tx.log")) as tx,
        ):
            plain.start_healthy(120)
            tx.start_healthy(120)
            servers = {"plain": plain, "tx": tx}
            sessions = {name: RawSession(server.url) for name, server in servers.items()}
            try:
                results: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}

                def run(variant: str, n: int) -> tuple[float, float]:
                    which, keyed = VARIANTS[variant]
                    return batch(sessions[which], servers[which].pid, n, keyed)

                for variant in VARIANTS:
                    run(variant, warmup)
                names = list(VARIANTS)
                for round_no in range(rounds):
                    order = names if round_no % 2 == 0 else names[::-1]
                    for variant in order:
                        results[variant].append(run(variant, calls))
            finally:
                for session in sessions.values():
                    session.close()
    cpu = {v: statistics.median(r[0] for r in rows) for v, rows in results.items()}
    wall = {v: statistics.median(r[1] for r in rows) for v, rows in results.items()}
    return {
        "server_cpu_us": {v: round(x) for v, x in cpu.items()},
        "server_cpu_ratio": {v: round(x / cpu["plain"], 2) for v, x in cpu.items()},
        "wall_us": {v: round(x) for v, x in wall.items()},
        "wall_ratio": {v: round(x / wall["plain"], 2) for v, x in wall.items()},
        "calls_per_s": {v: round(1e6 / x) for v, x in wall.items()},
        "calls_per_cpu_s": {v: round(1e6 / x) for v, x in cpu.items()},
    }


ALL_STORES = [
    "sqlite",
    "redis",
    "redis-cluster",
    "redis-cluster-nowait",
    "redis-sentinel",
    "redis-sentinel-nowait",
    "postgres",
]


def measure_store(store: str, calls: int, rounds: int, warmup: int) -> dict[str, Any] | str:
    """One store's figures, or why it was skipped."""

    def run(env: dict[str, str]) -> dict[str, Any]:
        return measure({"STATE_PREFIX": "bench-ledger", **env}, calls, rounds, warmup)

    if store == "sqlite":
        return measure({}, calls, rounds, warmup)
    if store.startswith("redis") and redis_server_path() is None:
        return "skipped: redis-server is not on PATH"
    query = "?wait_replicas=0" if store.endswith("-nowait") else ""
    if store == "redis":
        with RedisProcess() as redis:
            return run({"REDIS_URL": redis.url})
    if store.startswith("redis-cluster"):
        with RedisClusterProcess() as cluster:
            return run({"REDIS_URL": cluster.url + query})
    if store.startswith("redis-sentinel"):
        with RedisSentinelSet() as sentinel:
            return run({"REDIS_URL": sentinel.url + query})
    if store == "postgres":
        if postgres_bindir() is None:
            return "skipped: PostgreSQL is not installed"
        with PostgresProcess() as postgres:
            return run({"POSTGRES_URL": postgres.url})
    raise ValueError(f"unknown store {store!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"calls": args.calls, "rounds": args.rounds}
    stores = ALL_STORES if args.stores == "all" else args.stores.split(",")
    for store in stores:
        if store not in ALL_STORES:
            parser.error(f"unknown store {store!r} (one of {', '.join(ALL_STORES)}, or all)")
        report[store] = measure_store(store, args.calls, args.rounds, args.warmup)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"increment, {args.calls} calls x {args.rounds} rounds (medians);"
        " ratios to the plain unkeyed call"
    )
    print(
        f"{'store':21} {'variant':14} {'server CPU µs/call':>18} {'ratio':>6}"
        f" {'wall µs/call':>13} {'ratio':>6} {'calls/s':>8} {'calls/CPU-s':>11}"
    )
    for store in stores:
        row = report[store]
        if isinstance(row, str):
            print(f"{store:21} {row}")
            continue
        for variant in VARIANTS:
            print(
                f"{store:21} {variant:14} {row['server_cpu_us'][variant]:>18}"
                f" {row['server_cpu_ratio'][variant]:>6} {row['wall_us'][variant]:>13}"
                f" {row['wall_ratio'][variant]:>6} {row['calls_per_s'][variant]:>8}"
                f" {row['calls_per_cpu_s'][variant]:>11}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
