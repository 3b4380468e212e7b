"""Throwaway Redis Cluster, Redis + Sentinel and PostgreSQL on loopback (tests, benchmarks).

Built on ``examples._launch`` (the same process tracking, bounded waits and clean-up as
the single ``RedisProcess``): every wait has a deadline and polls a condition, and a
failed start stops whatever it started. All from Debian's packages: ``redis-server``,
``redis-sentinel``, ``redis-cli`` and ``postgresql`` (``/usr/lib/postgresql/*/bin``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

from examples._launch import (
    LOOPBACK,
    POLL_INTERVAL,
    LaunchError,
    RedisProcess,
    Service,
    _kill_and_reap,
    free_port,
    tail,
    track,
)

__all__ = [
    "PostgresProcess",
    "RedisClusterProcess",
    "RedisSentinelSet",
    "postgres_bindir",
    "redis_command",
]

#: Slots in a Redis Cluster.
SLOTS = 16384


def redis_command(port: int, *args: str, timeout: float = 5.0) -> str:
    """One command through ``redis-cli`` (raw output); raises ``LaunchError`` on failure."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise FileNotFoundError("redis-cli is not on PATH")
    done = subprocess.run(
        [cli, "-h", LOOPBACK, "-p", str(port), *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise LaunchError(f"redis-cli -p {port} {' '.join(args)}: {out}{done.stderr.decode()}")
    return out


def _info(port: int, section: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    with contextlib.suppress(LaunchError, subprocess.TimeoutExpired, OSError):
        for line in redis_command(port, "INFO", section, timeout=2.0).splitlines():
            name, sep, value = line.strip().partition(":")
            if sep:
                fields[name] = value
    return fields


def _wait_for(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    """Poll ``check`` until true; ``LaunchError`` with ``log()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise LaunchError(f"{what} not reached after {timeout}s:\n{log()}")
        # Poll interval of a bounded wait on a condition.
        time.sleep(POLL_INTERVAL)


class _ClusterNode(RedisProcess):
    """A ``redis-server`` in cluster mode; its bus port is chosen free as well."""

    def __init__(self, workdir: Path, node_timeout_ms: int) -> None:
        super().__init__(workdir=workdir)
        self.node_timeout_ms = node_timeout_ms

    def _pick_port(self) -> int:
        port = free_port()
        self.args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-port",
            str(free_port()),
            # A replica whose primary is gone takes over even after a long disconnect.
            "--cluster-replica-validity-factor",
            "0",
        ]
        return port


class RedisClusterProcess(Service):
    """A Redis Cluster of ``masters`` primaries with ``replicas`` replicas each, on loopback."""

    def __init__(self, masters: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-redis-cluster-"))
        count = masters * (1 + replicas)
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            _ClusterNode(self.workdir / f"node-{i + 1}", node_timeout_ms) for i in range(count)
        ]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node (any one is enough to start)."""
        hosts = ",".join(f"{LOOPBACK}:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}"

    def log_tail(self) -> str:
        return "\n".join(f"--- node {n.port}\n{tail(n.log_path, 15)}" for n in self.nodes)

    def start(self, timeout: float = 60.0) -> Self:
        """Start the nodes, join them (``redis-cli --cluster create``), wait until it serves."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
            cli = shutil.which("redis-cli")
            if cli is None:
                raise FileNotFoundError("redis-cli is not on PATH")
            create = ["--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas)]
            done = subprocess.run(
                [cli, *create, "--cluster-yes"],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            if done.returncode != 0:
                raise LaunchError(f"redis-cli --cluster create failed:\n{done.stdout.decode()}")
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            info = _info(node.port, "replication")
            cluster = redis_command(node.port, "CLUSTER", "INFO", timeout=2.0)
            if "cluster_state:ok" not in cluster:
                return False
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
            if info.get("role") == "master" and int(info.get("connected_slaves", "0")) < (
                self.replicas
            ):
                return False
        return True

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every node sees the cluster ok and every primary has its replicas in sync."""
        _wait_for("cluster ready", self._ready, timeout, self.log_tail)

    def slot_of(self, key: str) -> int:
        return int(redis_command(self.nodes[0].port, "CLUSTER", "KEYSLOT", key).strip())

    def primary_of(self, slot: int) -> _ClusterNode:
        """The node serving ``slot`` now (ask any live node)."""
        live = next(n for n in self.nodes if n.running)
        for line in redis_command(live.port, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            for spec in parts[8:]:
                low, _, high = spec.partition("-")
                if spec.startswith("[") or not low.isdigit():
                    continue
                if int(low) <= slot <= int(high or low):
                    return next(n for n in self.nodes if n.port == port)
        raise LaunchError(f"no primary serves slot {slot}")

    def replica_of(self, primary: RedisProcess) -> _ClusterNode:
        for node in self.nodes:
            info = _info(node.port, "replication")
            if info.get("role") == "slave" and info.get("master_port") == str(primary.port):
                return node
        raise LaunchError(f"primary {primary.port} has no replica")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinelSet(Service):
    """A primary, a replica and one Sentinel watching them (service ``mymaster``).

    One Sentinel (quorum 1) is enough for tests: ``SENTINEL FAILOVER`` does not need an
    agreement, and a dead primary is noticed after ``down_after_ms``. Production runs three.
    """

    service = "mymaster"

    def __init__(self, *, down_after_ms: int = 1000) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-redis-sentinel-"))
        self.down_after_ms = down_after_ms
        self.primary = RedisProcess(workdir=self.workdir / "primary")
        self.replica = RedisProcess(workdir=self.workdir / "replica")
        self.sentinel_port = 0
        self.sentinel_log = self.workdir / "sentinel.log"
        self._sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis+sentinel://host:port/service``: what ``RedisStore`` takes."""
        return f"redis+sentinel://{LOOPBACK}:{self.sentinel_port}/{self.service}"

    def log_tail(self) -> str:
        return (
            f"--- primary\n{tail(self.primary.log_path, 10)}\n--- replica\n"
            f"{tail(self.replica.log_path, 10)}\n--- sentinel\n{tail(self.sentinel_log, 20)}"
        )

    def start(self, timeout: float = 30.0) -> Self:
        try:
            self.primary.start()
            self.replica.args = ["--replicaof", LOOPBACK, str(self.primary.port)]
            self.replica.start()
            _wait_for(
                "replica in sync",
                lambda: _info(self.replica.port, "replication").get("master_link_status") == "up",
                timeout,
                self.log_tail,
            )
            self._start_sentinel(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_sentinel(self, timeout: float) -> None:
        executable = shutil.which("redis-sentinel")
        if executable is None:
            raise FileNotFoundError("redis-sentinel is not on PATH")
        self.sentinel_port = free_port()
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind {LOOPBACK}\ndir {self.workdir}\n"
            f"sentinel monitor {self.service} {LOOPBACK} {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} 5000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        with open(self.sentinel_log, "ab") as log:
            self._sentinel = subprocess.Popen(
                [executable, str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        track(self._sentinel)
        _wait_for("sentinel sees the replica", self._sentinel_ready, timeout, self.log_tail)

    def _sentinel_ready(self) -> bool:
        if self._sentinel is None or self._sentinel.poll() is not None:
            raise LaunchError(f"redis-sentinel exited:\n{self.log_tail()}")
        with contextlib.suppress(LaunchError, subprocess.TimeoutExpired, OSError):
            out = redis_command(self.sentinel_port, "SENTINEL", "REPLICAS", self.service)
            return str(self.replica.port) in out
        return False

    def current_primary_port(self) -> int:
        out = redis_command(
            self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        ).split()
        return int(out[1])

    def failover(self, timeout: float = 30.0) -> None:
        """``SENTINEL FAILOVER``: the replica is promoted; wait until Sentinel says so."""
        before = self.current_primary_port()
        redis_command(self.sentinel_port, "SENTINEL", "FAILOVER", self.service)
        _wait_for(
            "sentinel failover",
            lambda: self.current_primary_port() != before,
            timeout,
            self.log_tail,
        )
        if self.current_primary_port() == self.replica.port:
            self.primary, self.replica = self.replica, self.primary
        # The old primary follows the new one: wait until it is a replica in sync again.
        _wait_for(
            "old primary in sync as a replica",
            lambda: (
                _info(self.replica.port, "replication").get("master_link_status") == "up"
                and _info(self.primary.port, "replication").get("connected_slaves", "0") != "0"
            ),
            timeout,
            self.log_tail,
        )

    def stop(self) -> None:
        if self._sentinel is not None:
            if self._sentinel.poll() is None:
                self._sentinel.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._sentinel.wait(timeout=5)
            _kill_and_reap(self._sentinel)
        self.replica.stop()
        self.primary.stop()


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb``, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


class PostgresProcess(Service):
    """A throwaway PostgreSQL server on a loopback port, data in a temp dir.

    PostgreSQL refuses to run as root, so under root (CI containers) it runs as the
    ``postgres`` user that Debian's package creates, and the data dir is handed to it.
    Durability settings are off (``fsync=off``): the data is thrown away anyway.
    """

    user = "mcp"
    database = "postgres"

    def __init__(self, *, bindir: str | Path | None = None, run_as: str | None = None) -> None:
        found = Path(bindir) if bindir else postgres_bindir()
        if found is None:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.bindir = found
        self.run_as = run_as if run_as is not None else ("postgres" if os.geteuid() == 0 else "")
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-postgres-"))
        self.datadir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        if self.run_as:
            shutil.chown(self.workdir, self.run_as)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{self.database}"

    def _run(self, args: Sequence[str], timeout: float) -> None:
        done = subprocess.run(
            list(args),
            capture_output=True,
            timeout=timeout,
            check=False,
            user=self.run_as or None,
            cwd=self.workdir,
        )
        if done.returncode != 0:
            raise LaunchError(f"{args[0]} failed:\n{done.stdout.decode()}{done.stderr.decode()}")

    def start(self, timeout: float = 60.0) -> Self:
        try:
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                timeout,
            )
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.bindir / "postgres"),
                        "-D",
                        str(self.datadir),
                        "-h",
                        LOOPBACK,
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.workdir),
                        "-c",
                        "fsync=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=200",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    user=self.run_as or None,
                    cwd=self.workdir,
                )
            track(self._proc)
            _wait_for("postgres accepting connections", self._ready, timeout, self._tail)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _tail(self) -> str:
        return tail(self.log_path)

    def _ready(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            raise LaunchError(f"postgres exited:\n{self._tail()}")
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0):
                pass
        except OSError:
            return False
        done = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "-h",
                LOOPBACK,
                "-p",
                str(self.port),
                "-U",
                self.user,
            ],
            capture_output=True,
            timeout=5,
            check=False,
        )
        return done.returncode == 0

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # SIGINT: PostgreSQL's "fast" shutdown (aborts sessions, no wait for clients).
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        _kill_and_reap(proc)
