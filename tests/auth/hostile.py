"""Local hostile servers for the OAuth security tests: real sockets on 127.0.0.1.

Each ``Server`` is a small threaded HTTP/1.1 server whose answers a test scripts: a
protected MCP resource (``Resource``) and authorization servers (``AuthServer``), each on
its own port (its own origin), so the client under test talks to them exactly as it
would to real ones: its own bounded reader, its own decompression, its own redirects.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Seen:
    """One request a server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("latin-1")))


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, **headers: str) -> Answer:
        return cls(
            status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers}
        )


@cache
def gzip_bomb(size: int = 96 * 1024 * 1024) -> bytes:
    """``size`` bytes of spaces, gzipped (about 95 kB for 96 MiB)."""
    return gzip.compress(b" " * size, compresslevel=9)


class Server:
    """A threaded HTTP server on a free loopback port; ``answer`` decides every response."""

    def __init__(self, answer: Callable[[Seen], Answer] | None = None) -> None:
        self.answer = answer or (lambda seen: Answer(404))
        self.seen: list[Seen] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, dict(self.headers.items()), body)
                owner.seen.append(seen)
                reply = owner.answer(seen)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client stopped reading (a capped read)
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def text(self) -> str:
        """Everything this server received, headers and bodies, as one string to search."""
        return "\n".join(f"{s.method} {s.path} {s.headers} {s.body!r}" for s in self.seen)


class AuthServer(Server):
    """An authorization server that approves everything; tests tune ``metadata`` and ``token``."""

    def __init__(self, name: str) -> None:
        super().__init__(self._route)
        self.name = name
        self.metadata: dict[str, Any] = {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "registration_endpoint": f"{self.url}/register",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
        }
        self.metadata_answer: Answer | None = None
        self.token_answer: Callable[[Seen], Answer | None] | None = None
        self.expires_in = 3600
        self.issued: list[str] = []
        self.registrations: list[dict[str, Any]] = []

    def tokens_requested(self) -> list[Seen]:
        return [s for s in self.seen if s.path == "/token"]

    def _route(self, seen: Seen) -> Answer:
        path = urlsplit(seen.path).path
        if path == "/.well-known/oauth-authorization-server":
            if self.metadata_answer is not None:
                return self.metadata_answer
            return Answer.json(200, self.metadata)
        if path == "/register" and seen.method == "POST":
            body = json.loads(seen.body)
            if not body.get("redirect_uris"):
                return Answer.json(400, {"error": "invalid_redirect_uri"})
            self.registrations.append(body)
            return Answer.json(201, {"client_id": f"{self.name}-client-{len(self.registrations)}"})
        if path == "/token" and seen.method == "POST":
            if self.token_answer is not None:
                answer = self.token_answer(seen)
                if answer is not None:
                    return answer
            token = f"{self.name}-tok-{len(self.issued) + 1}"
            self.issued.append(token)
            return Answer.json(
                200,
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                    "refresh_token": f"{self.name}-refresh-{len(self.issued)}",
                },
            )
        return Answer(404)


class Resource(Server):
    """A protected MCP endpoint at ``/mcp`` naming ``authorization_servers`` in its metadata.

    It accepts the tokens in ``accept`` (empty: every token its authorization servers
    issued); ``answer_mcp`` replaces its answer to MCP requests.
    """

    def __init__(self, *servers: AuthServer) -> None:
        super().__init__(self._route)
        self.servers = list(servers)
        self.mcp = f"{self.url}/mcp"
        self.prm_url = f"{self.url}/.well-known/oauth-protected-resource/mcp"
        self.prm_answer: Answer | None = None
        self.answer_mcp: Callable[[Seen], Answer | None] | None = None
        self.refused: set[str] = set()

    def bearers(self) -> list[str]:
        """The bearer tokens MCP requests carried, in order."""
        found = []
        for seen in self.seen:
            auth = seen.headers.get("Authorization", "")
            if urlsplit(seen.path).path == "/mcp" and auth.startswith("Bearer "):
                found.append(auth[7:])
        return found

    def _valid(self, token: str) -> bool:
        return token not in self.refused and any(token in s.issued for s in self.servers)

    def _route(self, seen: Seen) -> Answer:
        path = urlsplit(seen.path).path
        if path.startswith("/.well-known/oauth-protected-resource"):
            if self.prm_answer is not None:
                return self.prm_answer
            if path != "/.well-known/oauth-protected-resource/mcp":
                return Answer(404)
            return Answer.json(
                200, {"resource": self.mcp, "authorization_servers": [s.url for s in self.servers]}
            )
        if path == "/mcp":
            if self.answer_mcp is not None:
                answer = self.answer_mcp(seen)
                if answer is not None:
                    return answer
            auth = seen.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and self._valid(auth[7:]):
                return Answer.json(200, {"ok": True})
            return Answer.json(
                401,
                {"error": "invalid_token"},
                **{"WWW-Authenticate": f'Bearer resource_metadata="{self.prm_url}"'},
            )
        return Answer(404)


class Approve:
    """The login step: an authorization server that approves at once (or as scripted)."""

    redirect_uri = "http://127.0.0.1:9/callback"

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.deny = False
        self._params: Mapping[str, str] = {}

    async def redirect(self, authorization_url: str) -> None:
        self.urls.append(authorization_url)
        query = dict(parse_qsl(urlsplit(authorization_url).query))
        issuer = authorization_url.split("/authorize", 1)[0]
        if self.deny:
            self._params = {"error": "access_denied", "state": query["state"], "iss": issuer}
        else:
            code = f"code-{len(self.urls)}"
            self._params = {"code": code, "state": query["state"], "iss": issuer}

    async def callback(self) -> Mapping[str, str]:
        return self._params


@contextmanager
def servers(*items: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for item in items:
            item.close()
