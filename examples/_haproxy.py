"""Run Debian's ``haproxy`` with ``examples/haproxy/haproxy.cfg`` in front of example servers.

Used by the HA tests (and anyone who wants the load-balanced setup on one machine). The
config reads its addresses from the environment, so the committed file runs unchanged.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import httpx

from examples._launch import LOOPBACK, LaunchError, free_port, stop_process, tail, track

CONFIG = Path(__file__).resolve().parent / "haproxy" / "haproxy.cfg"
ROUND_ROBIN_CONFIG = CONFIG.with_name("haproxy-roundrobin.cfg")
"""Plain round robin, no stick table: for the stateless era (2026-07-28)."""
BACKEND_SLOTS = 3


def haproxy_path() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


class HAProxyProcess:
    """One haproxy in the foreground (``-db``) on a free loopback port, stopped by PID."""

    def __init__(
        self, backend_urls: Sequence[str], *, log_path: Path, config: Path = CONFIG
    ) -> None:
        self.config = config
        if not 1 <= len(backend_urls) <= BACKEND_SLOTS:
            raise ValueError(f"the example config has {BACKEND_SLOTS} backend slots")
        self.backends = [urlsplit(url).netloc for url in backend_urls]
        # Unused slots point at the first backend (HAProxy needs every variable set).
        while len(self.backends) < BACKEND_SLOTS:
            self.backends.append(self.backends[0])
        self.port = free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The MCP endpoint through the load balancer."""
        return f"http://{LOOPBACK}:{self.port}/mcp"

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 20.0, expect_instances: int = 1) -> Self:
        """Start, then wait until health checks report ``expect_instances`` backends up."""
        executable = haproxy_path()
        if executable is None:
            raise LaunchError("haproxy is not installed (apt-get install -y haproxy)")
        env = {"MCP_FRONTEND": f"{LOOPBACK}:{self.port}", "PATH": "/usr/sbin:/usr/bin:/bin"}
        for i, backend in enumerate(self.backends, start=1):
            env[f"MCP_BACKEND_{i}"] = backend
        subprocess.run([executable, "-c", "-q", "-f", str(self.config)], env=env, check=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = track(
                subprocess.Popen(
                    [executable, "-db", "-f", str(self.config)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        finally:
            log.close()
        try:
            self.wait_backends(expect_instances, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_backends(self, count: int, timeout: float = 20.0) -> set[str]:
        """Wait until ``count`` distinct instances answer /health through the proxy."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while len(seen) < count:
                if self._proc is None or self._proc.poll() is not None:
                    raise LaunchError(f"haproxy exited; log:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"only {sorted(seen)} of {count} backends came up within {timeout}s;"
                        f" log:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = http.get(
                        f"{self.base_url}/health",
                        # A new connection each time, so leastconn spreads the checks.
                        headers={
                            "Accept": "text/event-stream, application/json",
                            "Connection": "close",
                        },
                    )
                    if response.status_code == 200:
                        seen.add(str(response.json().get("instance")))
                        continue
                # Not ready yet: wait on the process (returns early if it dies).
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.05)
        return seen

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
