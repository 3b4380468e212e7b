"""A tiny FastMCP server (test only) whose tool returns the ``_meta`` of its request.

Run: ``python -m tests.doors.echo_meta_server --port N``; ``/health`` answers when ready.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastmcp import Context, FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse

mcp = FastMCP("echo-meta")


@mcp.tool
def echo_meta(ctx: Context) -> dict[str, Any]:
    """The request's ``params._meta`` as the server received it."""
    meta = ctx.request_context.meta if ctx.request_context is not None else None
    if meta is None:
        return {}
    return {str(key): value for key, value in dict(meta).items()}


@mcp.custom_route("/health", methods=["GET"])
async def health(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(mcp.http_app(path="/mcp"), host="127.0.0.1", port=port, log_level="warning")
