"""Fixtures for the ``mcp-call`` tests: the real-server rig, and ``mcp-call`` as a subprocess.

The server fixtures are the integration rig's own (imported, so there is one
implementation); tests that use them are marked ``integration``.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

import tests.integration.conftest as rig_conftest
from tests.integration.conftest import (  # noqa: F401  (fixtures, used by name)
    mcp_cluster,
    mcp_server,
    redis_env,
    redis_server,
    server_factory,
    state_db,
)
from tests.rig import LOOPBACK

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_FIXTURES = frozenset({"mcp_server", "mcp_cluster", "server_factory", "redis_server"})
# Every subprocess run is bounded: a hang fails the test instead of stalling the suite.
RUN_TIMEOUT = 90.0


def _console_script() -> Path | None:
    script = Path(sys.executable).parent / "mcp-call"
    return script if script.is_file() else None


def mcp_call_argv() -> list[str]:
    """How to run ``mcp-call``: the installed console script, else ``python -m mcp_resilient``."""
    script = _console_script()
    return [str(script)] if script else [sys.executable, "-m", "mcp_resilient"]


def cli_env() -> dict[str, str]:
    """The test's environment, importing this checkout's ``mcp_resilient`` first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("COLUMNS", None)
    return env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start servers are integration tests (``-m "not integration"`` skips them)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_FIXTURES:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Feed the rig's log dump on failure (its hook lives in a conftest not loaded here)."""
    report = yield
    item.stash.setdefault(rig_conftest._reports_key, {})[report.when] = report
    return report


@dataclass(frozen=True, repr=False)
class CliResult:
    """One finished ``mcp-call`` run."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:
        return (
            f"\n$ mcp-call {' '.join(self.argv)}\n-> exit {self.code}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def run_cli(*args: str, input: str | None = None, timeout: float = RUN_TIMEOUT) -> CliResult:
    """Run ``mcp-call ARGS`` to completion and capture everything."""
    proc = subprocess.run(
        [*mcp_call_argv(), *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=REPO_ROOT,
        timeout=timeout,
    )
    return CliResult(list(args), proc.returncode, proc.stdout, proc.stderr)


class LiveCli:
    """A running ``mcp-call`` whose stderr can be waited on line by line."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.proc = subprocess.Popen(
            [*mcp_call_argv(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=REPO_ROOT,
        )
        self.lines: list[str] = []
        self._seen = 0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        assert self.proc.stderr is not None and self.proc.stdout is not None
        self._readers = [
            threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True),
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def _read_stdout(self, stream: IO[str]) -> None:
        self._stdout.append(stream.read())

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Block until a new stderr line matches ``pattern`` (a regex); fail on timeout or exit.

        Lines are consumed in order: each wait starts after the line the previous one matched.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                line = self.lines[self._seen]
                self._seen += 1
                if found := regex.search(line):
                    return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no stderr line matched {pattern!r} in {timeout}s:\n{self.stderr}")
            try:
                incoming = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if incoming is None:
                pytest.fail(f"mcp-call exited before a line matched {pattern!r}:\n{self.stderr}")
            self.lines.append(incoming)

    def finish(self, timeout: float = RUN_TIMEOUT) -> CliResult:
        """Wait for the exit; everything it wrote, in full."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"mcp-call did not finish within {timeout}s:\n{self.stderr}")
        for reader in self._readers:
            reader.join(timeout=10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return CliResult(self.args, self.proc.returncode, "".join(self._stdout), self.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def live_cli() -> Generator[type[LiveCli], None, None]:
    """Start ``mcp-call`` in the background (killed at teardown if still running)."""
    started: list[LiveCli] = []

    class Tracked(LiveCli):
        def __init__(self, args: Sequence[str]) -> None:
            super().__init__(args)
            started.append(self)

    yield Tracked
    for cli in started:
        cli.kill()


@pytest.fixture
def dead_url() -> Generator[str, None, None]:
    """An MCP URL on a loopback port that refuses connections (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    try:
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}/mcp"
    finally:
        sock.close()
