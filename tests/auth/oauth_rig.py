"""Servers for the OAuth integration tests, one role per process (``python -m tests.auth.oauth_rig``).

- ``--role as``: an authorization server (FastMCP's ``InMemoryOAuthProvider``) whose access
  tokens are short-lived RS256 JWTs, so resource servers can verify them on their own;
  ``/stats`` counts the grants it served.
- ``--role rs``: a protected MCP server (FastMCP ``RemoteAuthProvider`` + ``JWTVerifier``)
  naming that authorization server; ``/moved`` answers 307 to ``--redirect-to``.
- ``--role sink``: a foreign origin that records every request's headers (``/seen``).

Every process serves ``/health`` with its pid, on the listening socket it inherits (``--fd``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from examples.stateful_server import exit_with_parent


def _as_app(base: str, private_key: str, ttl: int) -> Any:
    from fastmcp import FastMCP
    from fastmcp.server.auth.auth import ClientRegistrationOptions
    from fastmcp.server.auth.providers.in_memory import InMemoryOAuthProvider
    from fastmcp.server.auth.providers.jwt import RSAKeyPair
    from pydantic import SecretStr

    keys = RSAKeyPair(private_key=SecretStr(private_key), public_key="")
    stats = {"authorization_code": 0, "refresh_token": 0}

    class JWTIssuingProvider(InMemoryOAuthProvider):
        """The in-memory provider, issuing self-contained JWT access tokens."""

        def _as_jwt(self, token: Any, grant: str) -> Any:
            stats[grant] += 1
            scopes = token.scope.split() if token.scope else []
            jwt = keys.create_token(
                subject="test-user",
                issuer=base,
                scopes=scopes,
                expires_in_seconds=ttl,
                additional_claims={"jti": secrets.token_hex(8)},
            )
            return token.model_copy(update={"access_token": jwt, "expires_in": ttl})

        async def exchange_authorization_code(self, client: Any, authorization_code: Any) -> Any:
            token = await super().exchange_authorization_code(client, authorization_code)
            return self._as_jwt(token, "authorization_code")

        async def exchange_refresh_token(self, client: Any, refresh_token: Any, scopes: Any) -> Any:
            token = await super().exchange_refresh_token(client, refresh_token, scopes)
            return self._as_jwt(token, "refresh_token")

    provider = JWTIssuingProvider(
        base_url=base,
        client_registration_options=ClientRegistrationOptions(enabled=True),
    )
    mcp = FastMCP("oauth-rig-as", auth=provider)

    @mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        return JSONResponse({"pid": os.getpid(), "role": "as"})

    @mcp.custom_route("/stats", methods=["GET"])
    async def get_stats(request: Request) -> Response:
        return JSONResponse(stats)

    return mcp.http_app(path="/mcp")


def _rs_app(
    base: str, instance: str, as_url: str, public_key: str, resource_base: str, redirect_to: str
) -> Any:
    from fastmcp import FastMCP
    from fastmcp.server.auth.auth import RemoteAuthProvider
    from fastmcp.server.auth.providers.jwt import JWTVerifier

    verifier = JWTVerifier(public_key=public_key, issuer=as_url)
    auth = RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[as_url],  # type: ignore[list-item]
        base_url=base,
        resource_base_url=resource_base,
    )
    mcp = FastMCP("oauth-rig-rs", auth=auth)

    @mcp.tool
    def whoami() -> str:
        """Which replica answered."""
        return instance

    @mcp.tool
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        return JSONResponse({"pid": os.getpid(), "role": "rs", "instance": instance})

    @mcp.custom_route("/moved", methods=["GET", "POST", "DELETE"])
    async def moved(request: Request) -> Response:
        return RedirectResponse(redirect_to, status_code=307)

    return mcp.http_app(path="/mcp", stateless_http=True)


def _sink_app() -> Any:
    seen: list[dict[str, str]] = []

    async def record(request: Request) -> Response:
        seen.append({"path": request.url.path, **dict(request.headers)})
        return JSONResponse({"error": "you should not be here"}, status_code=404)

    async def get_seen(request: Request) -> Response:
        return JSONResponse(seen)

    async def health(request: Request) -> Response:
        return JSONResponse({"pid": os.getpid(), "role": "sink"})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/seen", get_seen),
            Route("/{path:path}", record, methods=["GET", "POST", "DELETE"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--instance", default="rig")
    parser.add_argument("--role", choices=["as", "rs", "sink"], required=True)
    parser.add_argument("--key-file")
    parser.add_argument("--ttl", type=int, default=3600)
    parser.add_argument("--as-url")
    parser.add_argument("--resource-base")
    parser.add_argument("--redirect-to", default="http://127.0.0.1:9/")
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    host, port = sock.getsockname()[:2]
    base = f"http://{host}:{port}"
    parent = os.environ.get("MCP_EXIT_WITH_PARENT", "")
    if parent.isdigit():
        exit_with_parent(int(parent))
    key = Path(args.key_file).read_text() if args.key_file else ""
    if args.role == "as":
        app = _as_app(base, key, args.ttl)
    elif args.role == "rs":
        app = _rs_app(
            base, args.instance, args.as_url, key, args.resource_base or base, args.redirect_to
        )
    else:
        app = _sink_app()
    print(f"oauth_rig: {args.role} {args.instance} pid={os.getpid()} {base}", file=sys.stderr)
    started = time.monotonic()
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
    print(f"oauth_rig: stopped after {time.monotonic() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
