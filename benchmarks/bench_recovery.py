"""Recovery time: from SIGKILL of a session's backend to that session's next successful call.

    python benchmarks/bench_recovery.py [--trials 15] [--json]

Three example servers share state (Redis when ``redis-server`` is installed, else SQLite).
Each trial opens a client, writes some state, kills the backend holding the session, and
times the next ``get_counter`` call until it succeeds (it fails over, starts a new session
and carries the state over with ``resume_session``). The killed backend is restarted
between trials. Two setups: client-side failover over the three URLs ("direct"), and one
URL through HAProxy ("haproxy", skipped when haproxy is not installed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples._haproxy import HAProxyProcess, haproxy_path
from examples._launch import RedisProcess, ServerCluster, redis_server_path
from mcp_resilient import HANDSHAKE_VERSIONS, ResilientClient

# Sessions, resume_session and Last-Event-ID exist only in the handshake era; the
# stateless era is covered by test_eras.py and test_failover_stateless.py.
HANDSHAKE = HANDSHAKE_VERSIONS[0]


async def one_trial(cluster: ServerCluster, url: str | list[str], via_proxy: bool) -> float:
    async with ResilientClient(url, protocol_version=HANDSHAKE, timeout=30) as client:
        for _ in range(3):
            await client.call_tool("increment", {"by": 1})
        who = await client.call_tool("whoami")
        assert who.structured_content is not None
        pid = who.structured_content["pid"]
        victim = next(server for server in cluster if server.pid == pid)
        started = time.perf_counter()
        victim.kill()
        result = await client.call_tool("get_counter")
        elapsed = time.perf_counter() - started
        if result.structured_content != {"result": 3}:
            raise RuntimeError(f"state not carried over: {result.structured_content}")
        if not via_proxy and client.endpoint == victim.url:
            raise RuntimeError("client did not fail over")
    await anyio.to_thread.run_sync(victim.restart)
    return elapsed


async def measure(trials: int, log_dir: Path) -> dict[str, Any]:
    env: dict[str, str] = {}
    redis: RedisProcess | None = None
    if redis_server_path():
        redis = RedisProcess().start()
        env = {"REDIS_URL": redis.url, "STATE_PREFIX": "bench-recovery"}
    else:
        env = {"STATE_DB": str(log_dir / "state.sqlite3")}
    cluster = ServerCluster(3, env=env, prefix="node", log_dir=log_dir)
    results: dict[str, Any] = {"state": "redis" if redis else "sqlite"}
    try:
        cluster.start()
        results["direct"] = [await one_trial(cluster, cluster.urls, False) for _ in range(trials)]
        if haproxy_path():
            proxy = HAProxyProcess(cluster.urls, log_path=log_dir / "haproxy.log")
            proxy.start(expect_instances=3)
            try:
                samples = []
                for _ in range(trials):
                    samples.append(await one_trial(cluster, proxy.url, True))
                    await anyio.to_thread.run_sync(lambda: proxy.wait_backends(3))
                results["haproxy"] = samples
            finally:
                proxy.stop()
    finally:
        cluster.stop()
        if redis is not None:
            redis.cleanup()
    return results


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1000, 1),
        "worst_ms": round(max(samples) * 1000, 1),
        "best_ms": round(min(samples) * 1000, 1),
        "trials": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        raw = anyio.run(measure, args.trials, Path(tmp))
    report = {key: summary(value) for key, value in raw.items() if isinstance(value, list)}
    report_all: dict[str, Any] = {"state_backend": raw["state"], **report}
    if args.json:
        print(json.dumps(report_all, indent=2))
        return
    print(f"recovery time, kill -> next successful call (state in {raw['state']})")
    print(f"{'setup':<10} {'trials':>6} {'median ms':>10} {'worst ms':>9} {'best ms':>8}")
    for name, row in report.items():
        print(
            f"{name:<10} {row['trials']:>6} {row['median_ms']:>10} {row['worst_ms']:>9}"
            f" {row['best_ms']:>8}"
        )
    if "haproxy" not in report:
        print("haproxy: skipped (haproxy is not installed)")


if __name__ == "__main__":
    main()
