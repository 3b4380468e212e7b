"""A scripted protected MCP server and authorization server on respx, for OAuth unit tests.

Everything is answered in-process: a tiny MCP resource at ``MCP`` that demands a bearer
token, its protected resource metadata, and an authorization server at ``AS`` with
metadata, registration, authorization (answered by ``Redirect``) and token endpoints.
Each piece can be replaced per test to script bad input.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import respx

MCP = "http://mcp.test/mcp"
PRM = "http://mcp.test/.well-known/oauth-protected-resource/mcp"
AS = "http://as.test"
ASMETA = "http://as.test/.well-known/oauth-authorization-server"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class FakeAuth:
    """The scripted servers; attributes are what tests tune and inspect."""

    def __init__(self) -> None:
        self.prm: dict[str, Any] = {"resource": MCP, "authorization_servers": [AS]}
        self.metadata: dict[str, Any] = {
            "issuer": AS,
            "authorization_endpoint": f"{AS}/authorize",
            "token_endpoint": f"{AS}/token",
            "registration_endpoint": f"{AS}/register",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }
        self.challenge = f'Bearer resource_metadata="{PRM}"'
        self.expires_in: int | None = 3600
        self.issue_refresh = True
        self.valid: set[str] = set()
        self.counter = 0
        self.token_requests: list[dict[str, str]] = []
        self.token_headers: list[httpx.Headers] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.registrations: list[dict[str, Any]] = []
        self.mcp_requests: list[httpx.Request] = []
        self.as_requests: list[httpx.Request] = []
        self.challenges: dict[str, str] = {}
        self.resource_answer: Callable[[httpx.Request], httpx.Response | None] | None = None
        self.token_answer: Callable[[dict[str, str]], httpx.Response | None] | None = None
        self.iss_in_redirect: str | None = AS

    # -- routes ---------------------------------------------------------------------

    def install(self, router: respx.Router) -> None:
        router.route(url__startswith="http://mcp.test/.well-known/").mock(side_effect=self._prm)
        router.route(url__startswith="http://mcp.test/").mock(side_effect=self._mcp)
        router.route(url__startswith=AS).mock(side_effect=self._as)

    def _prm(self, request: httpx.Request) -> httpx.Response:
        self.as_requests.append(request)
        if str(request.url) == PRM and self.prm is not None:
            return httpx.Response(200, json=self.prm)
        return httpx.Response(404)

    def _mcp(self, request: httpx.Request) -> httpx.Response:
        self.mcp_requests.append(request)
        if self.resource_answer is not None:
            answer = self.resource_answer(request)
            if answer is not None:
                return answer
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid:
            return httpx.Response(
                401, headers={"WWW-Authenticate": self.challenge}, json={"error": "invalid_token"}
            )
        return httpx.Response(200, json={"ok": True, "token": auth[7:]})

    def _as(self, request: httpx.Request) -> httpx.Response:
        self.as_requests.append(request)
        path = request.url.path
        if request.method == "GET" and path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=self.metadata)
        if request.method == "POST" and path == "/register":
            import json

            body = json.loads(request.content)
            self.registrations.append(body)
            return httpx.Response(
                201, json={"client_id": f"client-{len(self.registrations)}", **body}
            )
        if request.method == "POST" and path == "/token":
            form = dict(parse_qsl(request.content.decode()))
            self.token_requests.append(form)
            self.token_headers.append(request.headers)
            if self.token_answer is not None:
                answer = self.token_answer(form)
                if answer is not None:
                    return answer
            return httpx.Response(200, json=self.issue())
        return httpx.Response(404)

    def issue(self) -> dict[str, Any]:
        self.counter += 1
        token = f"tok-{self.counter}"
        self.valid.add(token)
        data: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.expires_in is not None:
            data["expires_in"] = self.expires_in
        if self.issue_refresh:
            data["refresh_token"] = f"ref-{self.counter}"
        return data

    def grants(self, grant_type: str) -> list[dict[str, str]]:
        return [r for r in self.token_requests if r.get("grant_type") == grant_type]


class Redirect:
    """The login step: answers like an authorization server that approves at once."""

    redirect_uri = "http://127.0.0.1:9/callback"

    def __init__(self, fake: FakeAuth) -> None:
        self.fake = fake
        self.urls: list[str] = []
        self.params: Mapping[str, str] = {}
        self.override: dict[str, str | None] = {}

    async def redirect(self, authorization_url: str) -> None:
        self.urls.append(authorization_url)
        query = dict(parse_qsl(urlsplit(authorization_url).query))
        self.fake.authorize_requests.append(query)
        params = {"code": f"code-{len(self.urls)}", "state": query.get("state", "")}
        if self.fake.iss_in_redirect is not None:
            params["iss"] = self.fake.iss_in_redirect
        for key, value in self.override.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value
        self.params = params

    async def callback(self) -> Mapping[str, str]:
        return self.params
