"""Async helpers the HA tests share: ask the example servers what really happened."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from examples._launch import ServerProcess
from mcp_resilient import OutcomeUnknownError, ResilientClient


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
