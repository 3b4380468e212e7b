"""Start and stop example servers and Redis as child processes (used by the demo and tests).

One implementation for both: the demo must not import the tests, and the tests should
exercise exactly what the demo runs. Every wait here has a deadline and waits on a
condition (a health answer, a PONG, a process exit), and every failure cleans up the
processes it started, so nothing is left running.

Children stay in the launcher's process group (a Ctrl+C or a CI job kill reaches them
too) and are stopped by PID. If the launcher is killed outright, servers notice their
parent is gone and exit (``MCP_EXIT_WITH_PARENT``); an atexit hook covers normal exits.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: Interval between readiness probes; each probe is a wait on process exit, not a sleep.
POLL_INTERVAL = 0.05
#: Environment variables that choose a server's backends; never inherited by accident.
_SERVER_ENV_KEYS = ("REDIS_URL", "POSTGRES_URL", "STATE_DB", "STATE_PREFIX", "MCP_INSTANCE")
_SERVER_ENV_PREFIXES = ("MCP_",)

_live: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    """Last line of defence: children still running when the interpreter exits."""
    for proc in list(_live):
        _kill_and_reap(proc)


atexit.register(_kill_leftovers)


def _kill_and_reap(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGKILL a child we started (by its PID) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    _live.discard(proc)


def track(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember a child so the exit hook stops it if nobody else does."""
    _live.add(proc)
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; reap it; the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_and_reap(proc)
    _kill_and_reap(proc)  # reaps it and forgets it
    return proc.returncode


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class LaunchError(RuntimeError):
    """A child process did not become ready; the message carries its log tail."""


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (prefer ``bind_listener`` where possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bind_listener(host: str = LOOPBACK, port: int = 0, timeout: float = 10.0) -> socket.socket:
    """A listening socket, handed to the child so no other process can take the port.

    With a fixed port (a restart) the old process's socket may linger for a moment after
    it was killed, so binding is retried until it succeeds or the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                raise
        # Poll interval of a bounded wait for the condition "port is free".
        time.sleep(POLL_INTERVAL)


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without backend choices, plus ``env`` on top.

    A developer's shell with ``REDIS_URL`` set must not turn an SQLite test into a
    Redis one, so backend variables only ever come from ``env``.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in _SERVER_ENV_KEYS and not k.startswith(_SERVER_ENV_PREFIXES)
    }
    base["PYTHONUNBUFFERED"] = "1"
    # The server exits by itself if this process dies without stopping it (no orphans).
    base["MCP_EXIT_WITH_PARENT"] = str(os.getpid())
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    base["PYTHONPATH"] = os.pathsep.join(pythonpath)
    base.update(env or {})
    return base


class ServerProcess:
    """One ``examples.stateful_server`` instance in a child process on a loopback port.

    The port is bound here and the listening socket inherited by the child, so the port
    cannot be stolen between choosing it and serving on it; ``restart`` reuses it.
    """

    def __init__(
        self,
        *,
        instance: str = "server",
        env: Mapping[str, str] | None = None,
        port: int = 0,
        host: str = LOOPBACK,
        log_path: str | Path | None = None,
        extra_args: Sequence[str] = (),
        module: str = "examples.stateful_server",
    ) -> None:
        self.instance = instance
        self.module = module
        """The server module run with ``-m``: it takes ``--fd`` and ``--instance`` and serves
        ``/health`` with its pid (tests run small servers of their own this way)."""
        self.env = server_env(env)
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        if log_path is None:
            log_dir = Path(tempfile.mkdtemp(prefix="mcp-resilient-server-"))
            log_path = log_dir / f"{instance}.log"
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- addresses -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint (``/mcp``)."""
        return f"{self.base_url}/mcp"

    @property
    def health_url(self) -> str:
        return f"{self.base_url}/health"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"server {self.instance} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> Self:
        """Spawn the process (without waiting: call ``wait_healthy``)."""
        if self.running:
            raise RuntimeError(f"server {self.instance} is already running (pid {self.pid})")
        listener = bind_listener(self.host, self.port)
        try:
            self.port = int(listener.getsockname()[1])
            fd = listener.fileno()
            cmd = [
                sys.executable,
                "-m",
                self.module,
                "--fd",
                str(fd),
                "--instance",
                self.instance,
                *self.extra_args,
            ]
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                log.write(f"--- start {self.starts + 1}: {' '.join(cmd)}\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                )
            track(self._proc)
            self.starts += 1
        finally:
            # The child holds the only listening socket now, so a killed server refuses
            # connections instead of leaving them queued on our copy.
            listener.close()
        return self

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``/health`` until this very process answers; fail fast if it exits."""
        if self._proc is None:
            raise RuntimeError(f"server {self.instance} was never started")
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise LaunchError(
                        f"server {self.instance} exited with {code} before it was healthy; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(self.health_url)
                    body = response.json() if response.status_code == 200 else None
                    if isinstance(body, dict) and body.get("pid") == self._proc.pid:
                        return body
                    last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    last_error = repr(exc)
                if time.monotonic() >= deadline:
                    self.kill()
                    raise LaunchError(
                        f"server {self.instance} not healthy after {timeout}s ({last_error}); "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                # Doubles as the poll interval: returns at once if the process dies.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=POLL_INTERVAL)

    def start_healthy(self, timeout: float = 60.0) -> Self:
        """``start`` then ``wait_healthy``; kills the process if it never gets healthy."""
        self.start()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: the crash case (no graceful shutdown, connections reset)."""
        if self._proc is not None:
            _kill_and_reap(self._proc)

    def terminate(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit code."""
        return None if self._proc is None else stop_process(self._proc, timeout)

    def restart(self, timeout: float = 60.0, *, graceful: bool = False) -> Self:
        """Stop (SIGKILL, or SIGTERM when ``graceful``) and start again on the same port."""
        if graceful:
            self.terminate(timeout)  # a draining server exits once its calls are done
        else:
            self.kill()
        return self.start_healthy(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self.running and self._proc else "stopped"
        return f"ServerProcess({self.instance!r}, {self.url}, {state})"


class ServerCluster:
    """Several instances sharing one state backend; starts all or none."""

    def __init__(
        self,
        count: int,
        *,
        env: Mapping[str, str] | None = None,
        prefix: str = "server",
        log_dir: str | Path | None = None,
    ) -> None:
        log_root = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="mcp-cluster-"))
        self.servers = [
            ServerProcess(
                instance=f"{prefix}-{i + 1}",
                env=env,
                log_path=log_root / f"{prefix}-{i + 1}.log",
            )
            for i in range(count)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = 120.0) -> Self:
        """Spawn all, then wait for all (they boot in parallel); on failure stop all.

        ``timeout`` is a bound, not a target: on a loaded 2-core machine three processes
        importing FastMCP at once can take a minute to answer their first health check."""
        try:
            for server in self.servers:
                server.start()
            deadline = time.monotonic() + timeout
            for server in self.servers:
                server.wait_healthy(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.terminate()

    def __iter__(self) -> Iterator[ServerProcess]:
        return iter(self.servers)

    def __getitem__(self, index: int) -> ServerProcess:
        return self.servers[index]

    def __len__(self) -> int:
        return len(self.servers)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def redis_server_path() -> str | None:
    """``redis-server`` from PATH, or None."""
    return shutil.which("redis-server")


class Service(abc.ABC):
    """A throwaway service with a work directory: ``with`` starts it, then stops it and
    removes the directory, whatever happened in between."""

    workdir: Path

    @abc.abstractmethod
    def start(self) -> Self:
        """Start, and return once the service answers."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process of the service (bounded, always reaped)."""

    def cleanup(self) -> None:
        """Stop and remove the work directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class RedisProcess(Service):
    """A throwaway ``redis-server`` on a loopback port: no persistence, stopped by PID."""

    def __init__(
        self,
        *,
        executable: str | None = None,
        max_attempts: int = 3,
        args: Sequence[str] = (),
        workdir: str | Path | None = None,
    ) -> None:
        found = executable or redis_server_path()
        if found is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.executable = found
        self.max_attempts = max_attempts
        self.args = list(args)
        """Extra ``redis-server`` options (cluster mode, ``--replicaof``, ...)."""
        self.port = 0
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mcp-redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash case (nothing flushed, replicas not told)."""
        if self._proc is not None:
            _kill_and_reap(self._proc)

    def restart(self, timeout: float = 10.0) -> Self:
        """Start again on the same port (after ``kill`` or ``stop``)."""
        self.stop()
        self._spawn()
        self._wait_ready(timeout)
        return self

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("redis-server was never started")
        return self._proc.pid

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait for PING. redis-server binds its own port, so a port taken in
        between is retried with a new one (a bounded number of times)."""
        for attempt in range(1, self.max_attempts + 1):
            self.port = self._pick_port()
            self._spawn()
            try:
                self._wait_ready(timeout)
                return self
            except LaunchError:
                self.stop()
                in_use = "Address already in use" in tail(self.log_path)
                if not in_use or attempt == self.max_attempts:
                    raise
        raise AssertionError("unreachable")

    def _pick_port(self) -> int:
        return free_port()

    def _spawn(self) -> None:
        cmd = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        track(self._proc)

    def ping(self, timeout: float = 1.0) -> bool:
        """One PING over a raw socket (no client library needed)."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise LaunchError(f"redis-server exited with {code}; log:\n{tail(self.log_path)}")
            if self.ping():
                return
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"redis-server not answering PING after {timeout}s; log:\n{tail(self.log_path)}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=POLL_INTERVAL)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, SIGKILL after ``timeout``; always reaped."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        _kill_and_reap(proc)
