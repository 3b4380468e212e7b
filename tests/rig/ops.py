"""Async helpers the HA tests share: ask the example servers what really happened."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx
from mcp_types import CallToolResult

from examples._launch import ServerProcess
from mcp_resilient import OutcomeUnknownError, ResilientClient

MAX_CALLS_PER_WORKER = 5000  # a bound, not a target: workers run until the restarts are done
PACE = 0.02  # seconds between a worker's calls: a steady load, not a flood


async def executions(server: ServerProcess, call_id: str) -> int:
    """How many times ``increment`` ran with ``call_id`` (on any instance: shared state)."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.base_url}/executions/{call_id}")
        response.raise_for_status()
        return int(response.json()["count"])


async def open_gate(server: ServerProcess, name: str) -> None:
    """Release a tool paused at ``gate=name`` (the gate lives in the shared store)."""
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.post(f"{server.base_url}/gates/{name}")).raise_for_status()


async def waiting_on(server: ServerProcess, gate: str) -> str | None:
    """The instance whose call waits at ``gate`` (the example records it in the store)."""
    async with httpx.AsyncClient(timeout=5) as http:
        body = (await http.get(f"{server.base_url}/gates/{gate}")).json()
    waiting = body["waiting"]
    return str(waiting) if waiting else None


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
) -> None:
    """Poll an async condition until it holds; fail with ``what`` after ``timeout`` seconds."""
    try:
        with anyio.fail_after(timeout):
            while not await predicate():
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for: {what}") from None


async def increment_killed_mid_call(
    client: ResilientClient, victim: ServerProcess, witness: ServerProcess, bound: float
) -> tuple[Any, int]:
    """Run a gated, non-idempotent ``increment`` and SIGKILL ``victim`` once it committed.

    Returns what the call gave (its result, or the ``OutcomeUnknownError`` it raised) and
    how many times the server executed it, read from ``witness`` after the gate opens.
    """
    call_id, gate = uuid.uuid4().hex, uuid.uuid4().hex
    outcome: dict[str, Any] = {}

    async def call() -> None:
        try:
            outcome["value"] = await client.call_tool(
                "increment", {"by": 1, "call_id": call_id, "gate": gate}, timeout=bound
            )
        except OutcomeUnknownError as exc:
            outcome["value"] = exc

    async def committed() -> bool:
        return await executions(witness, call_id) >= 1

    with anyio.fail_after(bound):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            # The work is committed and the answer waits at the gate: kill now.
            await wait_until(committed, "increment committed")
            victim.kill()
    await open_gate(witness, gate)
    return outcome["value"], await executions(witness, call_id)


async def execution_counts(server: ServerProcess, call_ids: list[str]) -> dict[str, int]:
    """How many times each of ``call_ids`` ran (eight concurrent readers: lists are long)."""
    found: dict[str, int] = {}

    async def fetch(http: httpx.AsyncClient, chunk: list[str]) -> None:
        for call_id in chunk:
            response = await http.get(f"{server.base_url}/executions/{call_id}")
            response.raise_for_status()
            found[call_id] = int(response.json()["count"])

    async with httpx.AsyncClient(timeout=10) as http, anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(fetch, http, call_ids[i::8])
    return found


@dataclass
class LoadWorker:
    """One client's steady load of non-idempotent increments, each with its own ``call_id``."""

    name: str
    tool: str = "increment"
    arguments: dict[str, Any] = field(default_factory=lambda: {"by": 1})
    """What each call sends (plus its own ``call_id``): any server's counting tool."""
    acked: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """The call ids that ended in ``OutcomeUnknownError`` (the errors are in ``errors``)."""
    errors: list[OutcomeUnknownError] = field(default_factory=list)
    reads: int = 0
    """Read-only calls made (``read_every``): any error on one fails the worker."""
    read_every: int = 0
    """Also make a read-only ``add`` call after every this many increments (0: none)."""
    tool_errors: dict[str, str] | None = None
    """When a dict, answers with ``isError`` are recorded here (call id: text) instead of
    failing the worker: for loads where the server may refuse work (a store failing over)."""

    @property
    def calls(self) -> int:
        return len(self.acked) + len(self.unknown)

    async def run(
        self,
        client: ResilientClient,
        stop: anyio.Event,
        on_acked: Callable[[CallToolResult], None] | None = None,
    ) -> None:
        """Increment until ``stop`` is set (or the bound); ``on_acked`` sees each answer."""
        for _ in range(MAX_CALLS_PER_WORKER):
            if stop.is_set():
                break
            call_id = uuid.uuid4().hex
            try:
                result = await client.call_tool(self.tool, {**self.arguments, "call_id": call_id})
            except OutcomeUnknownError as exc:
                self.unknown.append(call_id)
                self.errors.append(exc)
                continue
            if result.is_error and self.tool_errors is not None:
                self.tool_errors[call_id] = " ".join(str(c) for c in result.content)[:200]
                continue
            assert result.is_error is False, result
            self.acked.append(call_id)
            if on_acked is not None:
                on_acked(result)
            if self.read_every and len(self.acked) % self.read_every == 0:
                # Read-only: safe to re-send, so it must never fail, whatever happens.
                read = await client.call_tool("add", {"a": 1, "b": 2})
                assert read.is_error is False and read.structured_content is not None, read
                self.reads += 1
            await anyio.sleep(PACE)


async def progress_after(
    total: Callable[[], int], at_least: int, what: str, timeout: float = 60.0
) -> None:
    """Wait until ``total()`` grew by ``at_least`` (the load goes on between disruptions)."""
    target = total() + at_least

    async def grown() -> bool:
        return total() >= target

    await wait_until(grown, f"{at_least} more {what}", timeout)


async def restart_each(
    servers: Iterable[ServerProcess],
    progress: Callable[[], Awaitable[None]],
    *,
    graceful: bool = True,
    timeout: float = 60.0,
) -> None:
    """Restart ``servers`` one after another (SIGTERM, or SIGKILL unless ``graceful``),
    waiting for ``progress`` after each: a rolling restart under load."""
    for server in servers:
        await anyio.to_thread.run_sync(lambda s=server: s.restart(timeout, graceful=graceful))
        await progress()


async def assert_acked_ran_once(server: ServerProcess, worker: LoadWorker) -> dict[str, int]:
    """The server's record for ``worker``'s calls: none ran twice, every acked one ran once."""
    assert worker.acked, f"{worker.name} made no progress"
    ran = await execution_counts(server, worker.acked + worker.unknown)
    duplicated = {cid: n for cid, n in ran.items() if n > 1}
    assert not duplicated, f"{worker.name}: calls executed more than once: {duplicated}"
    lost = [cid for cid in worker.acked if ran[cid] != 1]
    assert not lost, f"{worker.name}: acknowledged calls with no execution record: {lost}"
    return ran


@dataclass
class SafeGatedCall:
    """A call that is safe to re-send, held at ``gate`` once it ran so far.

    ``slow_progress`` is read-only by annotation (held after its first progress step);
    ``increment`` is marked idempotent by the caller (held once committed, under ``call_id``).
    """

    client: ResilientClient
    tool: str
    gate: str
    call_id: str
    bound: float
    progress_seen: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None

    @property
    def arguments(self) -> dict[str, Any]:
        if self.tool == "slow_progress":
            return {"steps": 2, "gate": self.gate, "gate_at": 1}
        return {"by": 1, "gate": self.gate, "call_id": self.call_id}

    async def _on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress_seen.set()

    async def run(self) -> None:
        self.result = await self.client.call_tool(
            self.tool,
            self.arguments,
            timeout=self.bound,
            progress_handler=self._on_progress,
            idempotent=True if self.tool == "increment" else None,
        )
