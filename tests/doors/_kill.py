"""What the doors tests share: kill the backend a client is on once a call has committed."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from tests.rig import ServerCluster, ServerProcess
from tests.rig.ops import executions, open_gate, wait_until

T = TypeVar("T")

#: Generous bound: it exists so a bug fails the test instead of hanging it.
BOUND = 60.0


def server_at(cluster: ServerCluster, url: str | None) -> ServerProcess:
    """The replica serving ``url``."""
    return next(server for server in cluster if server.url == url)


def answered_by(cluster: ServerCluster, whoami: Any) -> ServerProcess:
    """The replica that answered a ``whoami`` call (its structured result names its pid)."""
    content = getattr(whoami, "structured_content", whoami)
    pid = content["pid"] if "pid" in content else content["result"]["pid"]
    return next(server for server in cluster if server.running and server.pid == pid)


def other_than(cluster: ServerCluster, victim: ServerProcess) -> ServerProcess:
    return next(server for server in cluster if server is not victim and server.running)


def gated_increment_args() -> dict[str, Any]:
    """Arguments for an ``increment`` whose answer waits at a gate after the work commits."""
    return {"by": 1, "call_id": uuid.uuid4().hex, "gate": uuid.uuid4().hex}


def crash_all(cluster: ServerCluster) -> None:
    """SIGKILL every replica, then start them again on the same ports (same shared state).

    The backend running a call dies whichever replica the client routed it to, and a
    client that wrongly re-sends the call finds a server to run it twice on.
    """
    for server in cluster:
        server.kill()
    for server in cluster:
        server.start()
    for server in cluster:
        server.wait_healthy()


async def kill_after_commit(
    cluster: ServerCluster,
    args: dict[str, Any],
    run: Callable[[], Awaitable[T]],
) -> tuple[T, int]:
    """Run ``run()`` (which makes the gated ``increment`` with ``args``); once the increment
    committed, crash the backends under it (``crash_all``) and open the gate.

    Returns what ``run`` returned and how many times the increment executed.
    """
    call_id, gate = args["call_id"], args["gate"]
    witness = cluster[0]
    outcome: dict[str, Any] = {}

    async def drive() -> None:
        outcome["value"] = await run()

    async def committed() -> bool:
        return await executions(witness, call_id) >= 1

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await wait_until(committed, "increment committed")
            await anyio.to_thread.run_sync(crash_all, cluster)
            # A wrongly re-sent call would run again, then wait here: let it finish.
            await open_gate(witness, gate)
    return outcome["value"], await executions(witness, call_id)
