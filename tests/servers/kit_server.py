"""A small FastMCP 4 server on the server kit, for the kit's own integration tests.

Every run of a tool that does work is recorded in the kit's store (``exec:{call_id}``,
one entry per run, naming the instance), so a test counts real executions across
replicas and restarts. Configured from the environment:

- ``KIT_STORE``: a ``redis://`` URL, else a SQLite file path;
- ``KIT_PREFIX``: the store's key prefix (one per test);
- ``KIT_LEDGER=0``: no idempotency ledger (a replica not yet upgraded onto the kit);
- ``KIT_LEASE``: the ledger's lease in seconds;
- ``KIT_TOKENS``: ``token=subject,...``: bearer tokens verified by the server.

    python -m tests.servers.kit_server --fd 3 --instance a
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

import mcp_types
import uvicorn
from fastmcp import Context, FastMCP
from fastmcp.server.auth.providers.jwt import StaticTokenVerifier

from examples.stateful_server import exit_with_parent
from mcp_resilient.server import RedisStore, SQLiteStore, Store, add_resilience, session_state

RUN_TTL = 3600.0


def store_from_env(env: dict[str, str]) -> Store:
    location = env["KIT_STORE"]
    prefix = env.get("KIT_PREFIX", "kit:")
    if location.startswith(("redis://", "rediss://")):
        return RedisStore(location, prefix=prefix, socket_timeout=1.0)
    return SQLiteStore(location, prefix=prefix)


def create_server(env: dict[str, str], instance: str) -> FastMCP:
    tokens = {}
    for item in filter(None, env.get("KIT_TOKENS", "").split(",")):
        token, _, subject = item.partition("=")
        tokens[token] = {"client_id": subject, "sub": subject, "iss": "kit-test", "scopes": []}
    auth = StaticTokenVerifier(tokens) if tokens else None
    mcp = FastMCP("kit-server", auth=auth)
    store = store_from_env(env)
    add_resilience(
        mcp,
        store,
        idempotency=env.get("KIT_LEDGER", "1") != "0",
        lease=float(env.get("KIT_LEASE", "2")),
        health_info=lambda: {"pid": os.getpid(), "instance": instance},
    )

    async def ran(call_id: str) -> None:
        if call_id:
            await store.append(f"{store.prefix}exec:{call_id}", instance, ttl=RUN_TTL, touch=None)

    @mcp.tool
    async def add(ctx: Context, by: int, call_id: str = "") -> int:
        """Not idempotent: adds ``by`` to this client's counter in session_state."""
        await ran(call_id)
        return await session_state(ctx).incr("n", by)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def balance(ctx: Context) -> int:
        """This client's counter (0 when it has none)."""
        return int(await session_state(ctx).get("n") or 0)

    @mcp.tool
    async def remember(ctx: Context, note: str) -> int:
        """Append to this client's notes; how many it has."""
        return await session_state(ctx).append("notes", note)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def notes(ctx: Context) -> list[str]:
        return await session_state(ctx).get_list("notes")

    @mcp.tool
    async def strict(n: int, call_id: str = "") -> int:
        """Refuses anything but an integer (FastMCP validates before the body runs)."""
        await ran(call_id)
        return n

    @mcp.tool
    async def confirm_then_act(
        ctx: Context, item: str, call_id: str
    ) -> str | mcp_types.InputRequiredResult:
        """Asks the user once, then acts (records ``asks:`` and ``exec:`` per call_id)."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
        }
        question = f"really act on {item}?"
        if ctx.request_context is not None and ctx.request_context.protocol_version in (
            mcp_types.version.MODERN_PROTOCOL_VERSIONS
        ):
            answers = ctx.input_responses
            answer = answers.get("confirm") if answers else None
            if answer is None:
                await store.append(
                    f"{store.prefix}asks:{call_id}", instance, ttl=RUN_TTL, touch=None
                )
                return mcp_types.InputRequiredResult(
                    input_requests={
                        "confirm": mcp_types.ElicitRequest(
                            method="elicitation/create",
                            params=mcp_types.ElicitRequestFormParams(
                                message=question, requested_schema=schema
                            ),
                        )
                    },
                    request_state=f"asked:{call_id}",
                )
            accepted = getattr(answer, "action", None) == "accept" and bool(
                (getattr(answer, "content", None) or {}).get("ok")
            )
        else:
            await store.append(f"{store.prefix}asks:{call_id}", instance, ttl=RUN_TTL, touch=None)
            result = await ctx.elicit(question, bool)
            accepted = getattr(result, "action", None) == "accept" and bool(
                getattr(result, "data", False)
            )
        if not accepted:
            return f"left {item} alone"
        await ran(call_id)
        return f"acted on {item}"

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--instance", default="kit")
    args = parser.parse_args()
    env = dict(os.environ)
    parent = env.get("MCP_EXIT_WITH_PARENT", "")
    if parent.isdigit():
        exit_with_parent(int(parent))
    sock = socket.socket(fileno=args.fd)
    app = create_server(env, args.instance).http_app(path="/mcp", transport="http")
    print(f"kit_server: instance={args.instance} pid={os.getpid()}", file=sys.stderr, flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, proxy_headers=False)
    )
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
