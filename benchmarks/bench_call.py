"""Client CPU time per ``tools/call``: ResilientClient against its floor and its peers.

One FastMCP server (``bench_server.py``, a tool ``add(a, b)``) runs in a separate
process on a loopback port; it speaks both protocol eras, as FastMCP 4 does by default.
In this process, each client connects (a handshake-era session at 2025-11-25, or the
stateless era at 2026-07-28), warms up, then makes N sequential ``tools/call``
requests while we record this process's CPU time (``time.process_time``: the
server's CPU is in another process and not counted) and the wall time.

Clients, all against the same server in the same run. Handshake era (2025-11-25):

- ``raw-httpx``: the same POST done by hand with one ``httpx.AsyncClient`` (the floor);
- ``resilient``: ``mcp_resilient.ResilientClient(url, protocol_version="2025-11-25",
  listen=True)``;
- ``mcp``: the official SDK's ``mcp.Client(url, mode="legacy")``;
- ``fastmcp``: ``fastmcp.Client(url, mode="legacy")``.

Stateless era (2026-07-28), each client in its default mode:

- ``raw-stateless``: one POST by hand with the era's headers and ``_meta`` (the floor);
- ``resilient-auto``: ``ResilientClient(url)`` (``auto``: discovers, then stateless);
- ``mcp-auto``: ``mcp.Client(url)``;
- ``fastmcp-auto``: ``fastmcp.Client(url)``.

Rounds are interleaved (every client once per round, the order rotated each round)
so that drift in the machine's speed hits every client alike. The report gives the
median CPU microseconds per call over the rounds and its ratio to its era's raw floor.

Run: ``.venv/bin/python benchmarks/bench_call.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import io
import json
import os
import platform
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "bench_server.py"
LOOPBACK = "127.0.0.1"
PROTOCOL_VERSION = "2025-11-25"
STATELESS_VERSION = "2026-07-28"
TOOL_ARGS: dict[str, Any] = {"a": 1, "b": 2}
EXPECTED = 3
READY_TIMEOUT = 30.0
"""Seconds the server has to answer HTTP before the run is abandoned."""
STOP_TIMEOUT = 5.0
OPEN_TIMEOUT = 30.0
"""Seconds one client has to open its session (and close it again)."""
PHASE_TIMEOUT = 300.0
"""Seconds one warm-up or one measured batch may take before the run is abandoned."""
TARGET_RATIO = 0.80
"""The goal for ResilientClient, as a multiple of the raw-httpx floor (issue 21: the lean
path on httpcore, under the cost of the same POST made with httpx)."""


# -- the server process ------------------------------------------------------------


@dataclass
class Server:
    """The benchmark server's process and URL."""

    proc: subprocess.Popen[bytes]
    url: str
    stats_url: str
    log: IO[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """Every server process (``proc`` and the others sharing its listening socket)."""

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by all the server's processes (from /proc)."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        for worker in self.workers or [self.proc]:
            try:
                with open(f"/proc/{worker.pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        return total

    def log_tail(self, limit: int = 4000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]


def _wait_ready(server: Server, deadline: float) -> None:
    """Wait until the server answers HTTP (any status), it dies, or the deadline passes.

    The socket listens from the start (the kernel queues connections), so a TCP connect
    proves nothing: only an HTTP answer shows the app is serving.
    """
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"benchmark server exited with code {server.proc.returncode}:\n" + server.log_tail()
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"benchmark server did not answer within {READY_TIMEOUT:g} s:\n" + server.log_tail()
            )
        try:
            httpx.get(server.url, timeout=min(1.0, remaining))
            return
        except httpx.HTTPError:
            # Not serving yet; wait for the process a little instead of sleeping blind.
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=min(0.05, max(remaining, 0.001)))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server we started (by its PID), SIGKILL if it lingers, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def running_server(
    *, json_response: bool = False, backlog: int = 128, workers: int = 1
) -> Iterator[Server]:
    """Start the server on a free loopback port, wait until it serves, always stop it.

    ``workers`` processes share the one listening socket, as ``uvicorn --workers`` runs
    them; each serves whatever connection it accepts (fine for the stateless era, whose
    requests carry everything; handshake-era sessions live in one process's memory).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, 0))
    listener.listen(backlog)
    port = int(listener.getsockname()[1])
    fd = listener.fileno()
    command = [
        sys.executable,
        str(SERVER_SCRIPT),
        "--fd",
        str(fd),
        "--parent",
        str(os.getpid()),
    ]
    if json_response:
        command.append("--json-response")
    with tempfile.TemporaryFile() as log:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(max(1, workers)):
                procs.append(
                    subprocess.Popen(
                        command, pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=log, stderr=log
                    )
                )
        finally:
            listener.close()  # the children hold their own copies
        base = f"http://{LOOPBACK}:{port}"
        server = Server(procs[0], base + "/mcp", base + "/_bench/stats", log, procs)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            _wait_ready(server, deadline)
            if len(procs) > 1:
                _wait_all_serving(server, deadline)
            yield server
        finally:
            for proc in procs:
                _stop(proc)


def _wait_all_serving(server: Server, deadline: float) -> None:
    """Every worker has answered once (new connections land on whichever accepts)."""
    pids = {proc.pid for proc in server.workers}
    seen: set[int] = set()
    while seen != pids:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {len(pids)} server workers answered")
        dead = [proc for proc in server.workers if proc.poll() is not None]
        if dead:
            raise RuntimeError("a benchmark server worker exited:\n" + server.log_tail())
        try:
            with httpx.Client(timeout=1.0) as http:  # a new connection each time
                seen.add(int(http.get(server.stats_url).json()["pid"]))
        except (httpx.HTTPError, ValueError, KeyError):
            time.sleep(0.01)  # a worker still starting: try again on a new connection


# -- the clients ---------------------------------------------------------------------


@dataclass
class Opened:
    """An open session: how to make one call, and what it negotiated."""

    call: Callable[[], Awaitable[object]]
    protocol_version: str | None
    value_of: Callable[[object], object]
    """Pulls the tool's answer out of a call's result (used once, to check it is 3)."""


ClientFactory = Callable[[str], contextlib.AbstractAsyncContextManager[Opened]]


def _structured(result: object) -> object:
    structured = getattr(result, "structured_content", None)
    return structured.get("result") if isinstance(structured, dict) else None


class RawClient:
    """The floor: the same Streamable HTTP exchange written out by hand."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url
        self._next_id = 0
        self._headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        self.protocol_version: str | None = None
        self._call_params: dict[str, Any] = {"name": "add", "arguments": TOOL_ARGS}

    async def _post(self, message: dict[str, Any]) -> httpx.Response:
        body = json.dumps(message, separators=(",", ":")).encode()
        response = await self._http.post(self._url, content=body, headers=self._headers)
        if response.status_code not in (200, 202):
            raise RuntimeError(f"raw POST got HTTP {response.status_code}: {response.text[:200]}")
        return response

    @staticmethod
    def _message(response: httpx.Response) -> dict[str, Any]:
        """The minimal parse the body's format needs: JSON as is, SSE by its data line."""
        body = response.content
        if response.headers.get("content-type", "").startswith("application/json"):
            message: dict[str, Any] = json.loads(body)
            return message
        start = body.find(b"data:")
        if start < 0:
            raise RuntimeError(f"raw: no SSE data line in {body[:200]!r}")
        end = body.find(b"\n", start)
        line = body[start + 5 : end if end >= 0 else len(body)]
        message = json.loads(line)
        return message

    async def open(self) -> None:
        self._next_id += 1
        response = await self._post(
            {
                "jsonrpc": "2.0",
                "id": self._next_id,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "raw-httpx-bench", "version": "0"},
                },
            }
        )
        result = self._message(response)["result"]
        self.protocol_version = str(result["protocolVersion"])
        session_id = response.headers.get("mcp-session-id")
        if session_id is not None:
            self._headers["Mcp-Session-Id"] = session_id
        self._headers["MCP-Protocol-Version"] = self.protocol_version
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self) -> dict[str, Any]:
        self._next_id += 1
        response = await self._post(
            {
                "jsonrpc": "2.0",
                "id": self._next_id,
                "method": "tools/call",
                "params": self._call_params,
            }
        )
        return self._message(response)

    async def close(self) -> None:
        if "Mcp-Session-Id" in self._headers:
            await self._http.delete(self._url, headers=self._headers)


class RawStatelessClient(RawClient):
    """The stateless floor: each call one self-contained POST, headers and ``_meta`` included.

    Nothing to open: no handshake, no session. The headers and the ``_meta`` envelope are
    built once; only the request id changes per call.
    """

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        super().__init__(http, url)
        self.protocol_version = STATELESS_VERSION
        self._headers.update(
            {
                "MCP-Protocol-Version": STATELESS_VERSION,
                "Mcp-Method": "tools/call",
                "Mcp-Name": "add",
            }
        )
        self._meta = {
            "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw-httpx-bench", "version": "0"},
        }
        self._call_params = {"name": "add", "arguments": TOOL_ARGS, "_meta": self._meta}


@contextlib.asynccontextmanager
async def open_raw(url: str) -> AsyncIterator[Opened]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        raw = RawClient(http, url)
        await raw.open()
        try:
            yield Opened(
                raw.call,
                raw.protocol_version,
                lambda m: m["result"]["structuredContent"]["result"],  # type: ignore[index]
            )
        finally:
            await raw.close()


@contextlib.asynccontextmanager
async def open_raw_stateless(url: str) -> AsyncIterator[Opened]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        raw = RawStatelessClient(http, url)
        yield Opened(
            raw.call,
            raw.protocol_version,
            lambda m: m["result"]["structuredContent"]["result"],  # type: ignore[index]
        )


@contextlib.asynccontextmanager
async def _calling_add(
    client: contextlib.AbstractAsyncContextManager[Any], extract: Callable[[object], object]
) -> AsyncIterator[Opened]:
    """Open an SDK client (``call_tool`` and ``protocol_version``) for the ``add`` calls."""
    async with client as opened:
        yield Opened(
            functools.partial(opened.call_tool, "add", TOOL_ARGS),
            opened.protocol_version,
            extract,
        )


def _fastmcp_data(result: object) -> object:
    return getattr(result, "data", None)


# The SDKs are imported only by the factory that needs them.
def open_resilient(url: str) -> contextlib.AbstractAsyncContextManager[Opened]:
    from mcp_resilient import ResilientClient

    client = ResilientClient(url, protocol_version=PROTOCOL_VERSION, listen=True)
    return _calling_add(client, _structured)


def open_mcp(url: str) -> contextlib.AbstractAsyncContextManager[Opened]:
    from mcp import Client

    # mode="legacy": the initialize handshake (offers the newest handshake-era version).
    return _calling_add(Client(url, mode="legacy"), _structured)


def open_fastmcp(url: str) -> contextlib.AbstractAsyncContextManager[Opened]:
    from fastmcp import Client

    return _calling_add(Client(url, mode="legacy"), _fastmcp_data)


def open_resilient_auto(url: str) -> contextlib.AbstractAsyncContextManager[Opened]:
    from mcp_resilient import ResilientClient

    return _calling_add(ResilientClient(url), _structured)


def open_mcp_auto(url: str) -> contextlib.AbstractAsyncContextManager[Opened]:
    from mcp import Client

    return _calling_add(Client(url), _structured)


def open_fastmcp_auto(url: str) -> contextlib.AbstractAsyncContextManager[Opened]:
    from fastmcp import Client

    return _calling_add(Client(url), _fastmcp_data)


CLIENTS: dict[str, tuple[str, ClientFactory]] = {
    "raw-httpx": ("same POST by hand, one httpx.AsyncClient (floor)", open_raw),
    "resilient": (
        'ResilientClient(url, protocol_version="2025-11-25", listen=True)',
        open_resilient,
    ),
    "mcp": ('mcp.Client(url, mode="legacy") (official SDK)', open_mcp),
    "fastmcp": ('fastmcp.Client(url, mode="legacy")', open_fastmcp),
    "raw-stateless": ("one POST by hand with headers and _meta (floor)", open_raw_stateless),
    "resilient-auto": (
        "ResilientClient(url) (auto: discover, then stateless)",
        open_resilient_auto,
    ),
    "mcp-auto": ("mcp.Client(url) (official SDK, default mode)", open_mcp_auto),
    "fastmcp-auto": ("fastmcp.Client(url) (default mode)", open_fastmcp_auto),
}
ERA_OF: dict[str, str] = {
    name: STATELESS_VERSION
    if name in ("raw-stateless", "resilient-auto", "mcp-auto", "fastmcp-auto")
    else PROTOCOL_VERSION
    for name in CLIENTS
}
"""The protocol version each client must end up speaking (checked: same work per era)."""
FLOORS: dict[str, str] = {PROTOCOL_VERSION: "raw-httpx", STATELESS_VERSION: "raw-stateless"}
OURS: dict[str, str] = {PROTOCOL_VERSION: "resilient", STATELESS_VERSION: "resilient-auto"}
FLOOR = "raw-httpx"


def floor_of(name: str) -> str:
    """The raw floor a client is compared with: the one of its own era."""
    return FLOORS[ERA_OF[name]]


# -- measuring -----------------------------------------------------------------------


@dataclass
class Sample:
    """One client's figures for one round, per call."""

    cpu_us: float
    wall_us: float
    server_cpu_us: float
    connections: float
    """New TCP connections the server saw, per call (0 when keep-alive works)."""


@dataclass
class ClientResult:
    name: str
    label: str
    protocol_version: str | None = None
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        values: list[float] = [getattr(s, attribute) for s in self.samples]
        return statistics.median(values)


class ServerStats:
    """Reads the server's counters (connections seen, its CPU time) between batches."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url

    async def read(self) -> tuple[int, float]:
        response = await self._http.get(self._url)
        response.raise_for_status()
        stats = response.json()
        return int(stats["connections"]), float(stats["cpu_seconds"])


async def _measure_one(
    factory: ClientFactory,
    url: str,
    stats: ServerStats,
    calls: int,
    warmup: int,
    expected: str = PROTOCOL_VERSION,
) -> tuple[str | None, Sample]:
    """Open a session, warm up, time ``calls`` sequential calls, close the session."""
    async with contextlib.AsyncExitStack() as stack:
        async with _deadline(OPEN_TIMEOUT, "opening the session"):
            opened = await stack.enter_async_context(factory(url))
        if opened.protocol_version != expected:
            raise RuntimeError(
                f"negotiated {opened.protocol_version!r}, not {expected}: the clients"
                " would not be doing the same work"
            )
        call = opened.call
        async with _deadline(PHASE_TIMEOUT, "warm-up"):
            value = opened.value_of(await call())
            if value != EXPECTED:
                raise RuntimeError(f"add(1, 2) answered {value!r}, expected {EXPECTED}")
            for _ in range(warmup):
                await call()
            connections0, server_cpu0 = await stats.read()
        gc.collect()
        async with _deadline(PHASE_TIMEOUT, "measured calls"):
            wall0 = time.perf_counter()
            cpu0 = time.process_time()
            for _ in range(calls):
                await call()
            cpu1 = time.process_time()
            wall1 = time.perf_counter()
        async with _deadline(OPEN_TIMEOUT, "reading the server's counters"):
            connections1, server_cpu1 = await stats.read()
        protocol_version = opened.protocol_version
        # Closing (DELETE, task teardown) is bounded too, and not measured.
        async with _deadline(OPEN_TIMEOUT, "closing the session"):
            await stack.aclose()
    per_call = 1e6 / calls
    return protocol_version, Sample(
        cpu_us=(cpu1 - cpu0) * per_call,
        wall_us=(wall1 - wall0) * per_call,
        server_cpu_us=(server_cpu1 - server_cpu0) * per_call,
        connections=(connections1 - connections0) / calls,
    )


@contextlib.asynccontextmanager
async def _deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """Bound a block of awaits; a hang becomes an error that names the phase."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise RuntimeError(f"{what} took longer than {seconds:g} s") from None


async def run_rounds(
    server: Server, names: Sequence[str], *, calls: int, warmup: int, rounds: int, quiet: bool
) -> dict[str, ClientResult]:
    """Every client once per round, the starting client rotating from round to round."""
    results = {name: ClientResult(name, CLIENTS[name][0]) for name in names}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        stats = ServerStats(http, server.stats_url)
        for index in range(rounds):
            shift = index % len(names)
            for name in [*names[shift:], *names[:shift]]:
                protocol_version, sample = await _measure_one(
                    CLIENTS[name][1], server.url, stats, calls, warmup, ERA_OF[name]
                )
                results[name].protocol_version = protocol_version
                results[name].samples.append(sample)
                if not quiet:
                    print(
                        f"  round {index + 1}/{rounds} {name:<10}"
                        f" {sample.cpu_us:8.1f} µs CPU/call {sample.wall_us:8.1f} µs wall/call",
                        file=sys.stderr,
                        flush=True,
                    )
    return results


def round_ratios(results: dict[str, ClientResult], name: str) -> list[float]:
    """Per round, this client's CPU per call over its era's floor's in the same round."""
    floor = results[floor_of(name)].samples
    return [s.cpu_us / f.cpu_us for s, f in zip(results[name].samples, floor, strict=True)]


# -- profiling -----------------------------------------------------------------------

ProfileRows = dict[str, tuple[float, float, float]]
"""function -> (self µs per call, cumulative µs per call, times entered per call)."""


async def profile_client(url: str, name: str, calls: int, warmup: int) -> cProfile.Profile:
    """Run ``calls`` calls of one client under cProfile (after a warm-up outside it)."""
    profiler = cProfile.Profile()
    async with _deadline(OPEN_TIMEOUT, "opening the session"):
        opened_cm = CLIENTS[name][1](url)
        opened = await opened_cm.__aenter__()
    try:
        async with _deadline(PHASE_TIMEOUT, "profiled calls"):
            for _ in range(warmup):
                await opened.call()
            gc.collect()
            profiler.enable()
            for _ in range(calls):
                await opened.call()
            profiler.disable()
    finally:
        async with _deadline(OPEN_TIMEOUT, "closing the session"):
            await opened_cm.__aexit__(None, None, None)
    return profiler


def _profile_rows(profiler: cProfile.Profile, calls: int) -> ProfileRows:
    entries: dict[Any, Any] = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    stdlib = os.path.dirname(os.__file__) + os.sep
    rows: ProfileRows = {}
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in entries.items():
        short = filename
        if "site-packages" + os.sep in short:
            short = short.split("site-packages" + os.sep, 1)[1]
        elif short.startswith(stdlib):
            short = short[len(stdlib) :]
        elif short.startswith(str(HERE.parent)):
            short = os.path.relpath(short, HERE.parent)
        key = f"{short}:{line}({func})"
        rows[key] = (tottime / calls * 1e6, cumtime / calls * 1e6, ncalls / calls)
    return rows


def print_profile(
    rows: ProfileRows, floor: ProfileRows | None, *, top: int, only: str | None
) -> None:
    """Top functions by self time per call, then (against the floor) what the client adds."""
    selected = {k: v for k, v in rows.items() if only is None or only in k}
    title = f"functions matching {only!r}" if only else "all functions"
    total = sum(v[0] for v in selected.values())
    print(f"\nTop {top} by self time, {title}; µs per tools/call (profiled, so inflated)")
    print(f"{'self µs':>9} {'cum µs':>9} {'n/call':>7}  function")
    for key, (self_us, cum_us, n) in sorted(selected.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{self_us:9.1f} {cum_us:9.1f} {n:7.2f}  {key}")
    print(f"{total:9.1f}  self time of all {len(selected)} {title}")
    if floor is None:
        return
    zero = (0.0, 0.0, 0.0)
    deltas = [
        (
            rows.get(k, zero)[0] - floor.get(k, zero)[0],
            rows.get(k, zero)[2] - floor.get(k, zero)[2],
            k,
        )
        for k in rows.keys() | floor.keys()
        if only is None or only in k
    ]
    deltas.sort(reverse=True)
    print(f"\nTop {top} self-time increases over the raw floor; µs per tools/call")
    print(f"{'+self µs':>9} {'+n/call':>8}  function")
    for d_self, d_n, key in deltas[:top]:
        print(f"{d_self:9.1f} {d_n:8.2f}  {key}")
    print(
        f"{sum(v[0] for v in rows.values()) - sum(v[0] for v in floor.values()):9.1f}"
        "  total self time over the floor (all functions)"
    )


# -- reporting -----------------------------------------------------------------------


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except ValueError:  # already imported, without a spec
        return module in sys.modules


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code: versions and one known trap."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in ("mcp-resilient", "httpx", "httpcore", "httpx-sse", "anyio", "mcp", "fastmcp"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": versions,
        # httpcore imports sniffio on every lock set-up; when it is missing each failed
        # import searches sys.path again (tens of µs), which inflates every httpx client.
        "sniffio_installed": _importable("sniffio"),
    }


def report_table(
    results: dict[str, ClientResult],
    env: dict[str, Any],
    *,
    calls: int,
    warmup: int,
    rounds: int,
    answer: str,
) -> str:
    sniffio = "installed" if env["sniffio_installed"] else "NOT installed (slows httpcore)"
    lines = [
        f"Client CPU per tools/call: {calls} calls x {rounds} rounds (warm-up {warmup}),"
        f" server answers {answer}",
        f"Python {env['python']}, {env['cpus']} CPUs, sniffio {sniffio}."
        " Medians over rounds; the server's CPU is not in the client figures.",
    ]
    for era, floor_name in FLOORS.items():
        names = [name for name in results if ERA_OF[name] == era]
        if not names:
            continue
        floor = results[floor_name].median("cpu_us")
        lines += [
            "",
            f"protocol {era} ({'stateless' if era == STATELESS_VERSION else 'handshake'} era)",
            f"{'client':<14} {'CPU µs/call':>11} {'x floor':>7} {'per round':>11}"
            f" {'wall µs/call':>12} {'conn/call':>9} {'server µs':>9}  what",
        ]
        for name in names:
            result = results[name]
            ratios = round_ratios(results, name)
            lines.append(
                f"{name:<14} {result.median('cpu_us'):11.1f}"
                f" {result.median('cpu_us') / floor:6.2f}x"
                f" {min(ratios):5.2f}-{max(ratios):4.2f}x"
                f" {result.median('wall_us'):12.1f} {result.median('connections'):9.2f}"
                f" {result.median('server_cpu_us'):9.1f}  {result.label}"
            )
    lines += [
        "",
        "x floor: median CPU/call over its era's floor; per round: the same ratio within each"
        " round.",
        "conn/call: new TCP connections per call (0.00 when the keep-alive connection is reused).",
    ]
    for era, ours in OURS.items():
        if ours in results:
            ratio = results[ours].median("cpu_us") / results[FLOORS[era]].median("cpu_us")
            verdict = "meets" if ratio <= TARGET_RATIO else "misses"
            lines.append(
                f"ResilientClient ({era}): {ratio:.2f}x the {FLOORS[era]} floor; {verdict}"
                f" the target of {TARGET_RATIO:.2f}x"
            )
    return "\n".join(lines)


def report_json(
    results: dict[str, ClientResult],
    env: dict[str, Any],
    *,
    calls: int,
    warmup: int,
    rounds: int,
    answer: str,
) -> dict[str, Any]:
    return {
        "calls": calls,
        "warmup": warmup,
        "rounds": rounds,
        "protocol_versions": sorted({ERA_OF[name] for name in results}),
        "server_answer": answer,
        "environment": env,
        "target_ratio": TARGET_RATIO,
        "floors": {era: name for era, name in FLOORS.items() if name in results},
        "clients": {
            r.name: {
                "label": r.label,
                "protocol_version": r.protocol_version,
                "floor": floor_of(r.name),
                "cpu_us_per_call": r.median("cpu_us"),
                "ratio_to_floor": r.median("cpu_us") / results[floor_of(r.name)].median("cpu_us"),
                "round_ratios": round_ratios(results, r.name),
                "wall_us_per_call": r.median("wall_us"),
                "connections_per_call": r.median("connections"),
                "server_cpu_us_per_call": r.median("server_cpu_us"),
                "rounds": [asdict(s) for s in r.samples],
            }
            for r in results.values()
        },
    }


# -- entry point ---------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Client CPU time per MCP tools/call, as ratios to a raw-httpx floor."
    )
    parser.add_argument("--calls", type=_positive, default=2000, help="measured calls per round")
    parser.add_argument("--warmup", type=_non_negative, default=200, help="unmeasured calls first")
    parser.add_argument("--rounds", type=_positive, default=5, help="interleaved rounds")
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma-separated subset of {', '.join(CLIENTS)} (the floor is always included)",
    )
    parser.add_argument(
        "--json-response",
        action="store_true",
        help="have the server answer plain JSON instead of its default SSE",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--profile",
        metavar="CLIENT",
        choices=list(CLIENTS),
        help="instead of benchmarking, profile CLIENT with cProfile for --calls calls"
        " (and the floor, to show what CLIENT adds over it)",
    )
    parser.add_argument(
        "--profile-filter",
        default=None,
        help="with --profile: list only functions whose file path contains this",
    )
    parser.add_argument("--profile-top", type=_positive, default=30, help="rows to print")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.clients.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLIENTS]
    if unknown:
        parser.error(f"unknown client(s): {', '.join(unknown)}")
    for floor in sorted({floor_of(name) for name in names}, reverse=True):
        if floor not in names:
            names.insert(0, floor)
    args.names = list(dict.fromkeys(names))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    answer = "JSON (json_response=True)" if args.json_response else "SSE (FastMCP default)"
    env = environment()
    with running_server(json_response=args.json_response) as server:
        if args.profile:
            rows = _profile_rows(
                asyncio.run(profile_client(server.url, args.profile, args.calls, args.warmup)),
                args.calls,
            )
            floor = None
            if args.profile != floor_of(args.profile):
                floor_name = floor_of(args.profile)
                floor = _profile_rows(
                    asyncio.run(profile_client(server.url, floor_name, args.calls, args.warmup)),
                    args.calls,
                )
            print(f"cProfile of {args.profile}, {args.calls} calls; server answers {answer}")
            print_profile(rows, floor, top=args.profile_top, only=args.profile_filter)
            return 0
        results = asyncio.run(
            run_rounds(
                server,
                args.names,
                calls=args.calls,
                warmup=args.warmup,
                rounds=args.rounds,
                quiet=args.json,
            )
        )
    meta: dict[str, Any] = {
        "calls": args.calls,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "answer": answer,
    }
    if args.json:
        print(json.dumps(report_json(results, env, **meta), indent=2))
    else:
        print(report_table(results, env, **meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
