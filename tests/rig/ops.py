"""Async helpers the HA tests share: ask the example servers what really happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import httpx

from examples._launch import ServerProcess


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
