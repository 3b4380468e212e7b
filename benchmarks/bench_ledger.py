"""What the idempotency ledger costs a healthy server, per ``tools/call``.

    .venv/bin/python benchmarks/bench_ledger.py                 # 300 calls x 5 rounds per store
    .venv/bin/python benchmarks/bench_ledger.py --calls 50 --rounds 2 --stores sqlite
    .venv/bin/python benchmarks/bench_ledger.py --stores all    # + Cluster, Sentinel, PostgreSQL

Starts the example server (``examples/stateful_server.py``, built on the server kit) in
its own process, once per store (SQLite file; Redis on a throwaway ``redis-server``; a
Redis Cluster of 3 primaries with a replica each and a primary/replica pair under Sentinel,
each with ``WAIT`` for one replica and without; PostgreSQL on a throwaway server),
opens one handshake-era session with plain httpx, and sends sequential ``increment``
calls (not idempotent, so the ledger engages) with and without an idempotency key in
``params._meta``. Keyed and unkeyed batches alternate within every round, so drift hits
both alike. It reports, per store: the server's CPU time per call (from /proc, user +
system: the ledger's cost) and the wall time per call, each keyed / unkeyed as a ratio,
and what that makes per replica: keyed calls per second for one sequential client, and
keyed calls per CPU-second of the replica (its ceiling when the CPU is the limit).
A benchmark, not a test: it asserts nothing about timings and exits 0 when it ran.
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
        with ServerProcess(instance="bench", env=env, log_path=Path(tmp, "server.log")) as server:
            server.start_healthy()
            session = RawSession(server.url)
            try:
                for keyed in (True, False):
                    batch(session, server.pid, warmup, keyed)
                results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                for round_no in range(rounds):
                    order = (True, False) if round_no % 2 == 0 else (False, True)
                    for keyed in order:
                        results[keyed].append(batch(session, server.pid, calls, keyed))
            finally:
                session.close()
    keyed_cpu = statistics.median(r[0] for r in results[True])
    plain_cpu = statistics.median(r[0] for r in results[False])
    keyed_wall = statistics.median(r[1] for r in results[True])
    plain_wall = statistics.median(r[1] for r in results[False])
    return {
        "server_cpu_us": {"keyed": round(keyed_cpu), "unkeyed": round(plain_cpu)},
        "server_cpu_ratio": round(keyed_cpu / plain_cpu, 2),
        "wall_us": {"keyed": round(keyed_wall), "unkeyed": round(plain_wall)},
        "wall_ratio": round(keyed_wall / plain_wall, 2),
        "keyed_calls_per_s": round(1e6 / keyed_wall),
        "keyed_calls_per_cpu_s": round(1e6 / keyed_cpu),
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
    run = lambda env: measure(env, calls, rounds, warmup)  # noqa: E731
    base = {"STATE_PREFIX": "bench-ledger"}
    if store == "sqlite":
        return run({})
    if store.startswith("redis") and redis_server_path() is None:
        return "skipped: redis-server is not on PATH"
    query = "?wait_replicas=0" if store.endswith("-nowait") else ""
    if store == "redis":
        with RedisProcess() as redis:
            return run({**base, "REDIS_URL": redis.url})
    if store.startswith("redis-cluster"):
        with RedisClusterProcess() as cluster:
            return run({**base, "REDIS_URL": cluster.url + query})
    if store.startswith("redis-sentinel"):
        with RedisSentinelSet() as sentinel:
            return run({**base, "REDIS_URL": sentinel.url + query})
    if store == "postgres":
        if postgres_bindir() is None:
            return "skipped: PostgreSQL is not installed"
        with PostgresProcess() as postgres:
            return run({**base, "POSTGRES_URL": postgres.url})
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
    print(f"increment, {args.calls} calls x {args.rounds} rounds (medians), keyed vs unkeyed")
    print(
        f"{'store':22} {'server CPU µs/call':>26} {'ratio':>6} {'wall µs/call':>22} {'ratio':>6}"
        f" {'keyed/s':>8} {'keyed/CPU-s':>11}"
    )
    for store in stores:
        row = report[store]
        if isinstance(row, str):
            print(f"{store:22} {row}")
            continue
        cpu, wall = row["server_cpu_us"], row["wall_us"]
        print(
            f"{store:22} {cpu['keyed']:>12} / {cpu['unkeyed']:<11} {row['server_cpu_ratio']:>6}"
            f" {wall['keyed']:>10} / {wall['unkeyed']:<9} {row['wall_ratio']:>6}"
            f" {row['keyed_calls_per_s']:>8} {row['keyed_calls_per_cpu_s']:>11}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
