"""An MCP server protected by OAuth, with the server kit binding work to the caller.

    python -m examples.oauth_server --port 8010
    mcp-call http://127.0.0.1:8010/mcp login
    mcp-call http://127.0.0.1:8010/mcp call whoami

FastMCP's ``InMemoryOAuthProvider`` makes this server its own authorization server
(dynamic client registration, PKCE with S256, a login that approves at once): the
development stand-in for your identity provider. In production, keep the rest of this
file and swap the provider (see docs/auth.md, "OAuth for your own server").
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile

import uvicorn
from fastmcp import FastMCP
from fastmcp.server.auth.auth import ClientRegistrationOptions
from fastmcp.server.auth.providers.in_memory import InMemoryOAuthProvider

from mcp_resilient.server import SQLiteStore, add_resilience, default_principal


def build(base_url: str, state_db: str) -> FastMCP:
    """The protected server: ``base_url`` is where clients reach it (``http://host:port``)."""
    auth = InMemoryOAuthProvider(
        base_url=base_url,
        client_registration_options=ClientRegistrationOptions(enabled=True),
    )
    mcp = FastMCP("notes", auth=auth)
    # The kit's principal is the verified token's issuer and subject (or client id):
    # session state and idempotency keys are bound to it, so another caller cannot
    # read, resume or replay them.
    add_resilience(mcp, SQLiteStore(state_db), health_info=lambda: {"pid": os.getpid()})

    @mcp.tool
    def whoami() -> str:
        """The principal this call's token stands for, as the kit sees it."""
        return default_principal()

    @mcp.tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--fd", type=int, help="serve on this inherited listening socket")
    parser.add_argument("--instance", default="oauth")
    parser.add_argument("--state-db", default=os.path.join(tempfile.gettempdir(), "notes.db"))
    args = parser.parse_args()
    if args.fd is not None:  # a launcher (the tests) picked the port
        sock = socket.socket(fileno=args.fd)
        host, port = sock.getsockname()[:2]
    else:
        sock = socket.create_server((args.host, args.port))
        host, port = args.host, args.port
    app = build(f"http://{host}:{port}", args.state_db).http_app(path="/mcp")
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])


if __name__ == "__main__":
    main()
