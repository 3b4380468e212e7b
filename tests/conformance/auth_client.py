"""The client the conformance suite drives for its ``auth/*`` scenarios.

Runs ``ResilientClient(url, auth=mcp_resilient.auth.OAuth(...))`` against the suite's
protected server: the suite passes the scenario in ``MCP_CONFORMANCE_SCENARIO``, the wire
version in ``MCP_CONFORMANCE_PROTOCOL_VERSION`` and credentials (when the scenario has any)
as JSON in ``MCP_CONFORMANCE_CONTEXT``. The interactive login is driven programmatically:
the redirect handler fetches the authorization URL without following redirects and reads
the code from the ``Location`` the suite's authorization server answers with.

Scenarios in which a correct client must refuse (a mismatched resource or issuer, endless
step-up) pass here only if the expected typed error is raised; any other outcome is a
failure. Exit status: 0 done, 1 failed (reason on stderr), 2 usage error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcp_resilient import ResilientClient
from mcp_resilient.auth import (
    AuthError,
    AuthRetryLimitError,
    IdJagAssertion,
    IssuerMismatchError,
    OAuth,
    ResourceMismatchError,
)

REDIRECT_URI = "http://localhost:3000/callback"
CIMD_URL = "https://conformance-test.local/client-metadata.json"
REQUEST_TIMEOUT = 20.0
SCENARIO_TIMEOUT = 45.0

# Scenarios where the client must refuse, and the error that shows it did.
EXPECTED_REFUSAL: dict[str, type[AuthError]] = {
    "auth/resource-mismatch": ResourceMismatchError,
    "auth/iss-supported-missing": IssuerMismatchError,
    "auth/iss-wrong-issuer": IssuerMismatchError,
    "auth/iss-unexpected": IssuerMismatchError,
    "auth/iss-normalized": IssuerMismatchError,
    "auth/metadata-issuer-mismatch": IssuerMismatchError,
    "auth/scope-retry-limit": AuthRetryLimitError,
}


class ScenarioFailed(Exception):
    """The scenario did not go as a correct client's run goes."""


class FetchRedirect:
    """The login step without a browser: GET the authorization URL, read its redirect."""

    redirect_uri = REDIRECT_URI

    def __init__(self) -> None:
        self._params: Mapping[str, str] | None = None
        self.authorizations = 0

    async def redirect(self, authorization_url: str) -> None:
        self.authorizations += 1
        async with httpx.AsyncClient(follow_redirects=False, timeout=10.0) as http:
            response = await http.get(authorization_url)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise ScenarioFailed(
                f"authorization endpoint answered {response.status_code}, not a redirect"
            )
        self._params = dict(parse_qsl(urlsplit(location).query))

    async def callback(self) -> Mapping[str, str]:
        if self._params is None:
            raise ScenarioFailed("callback before redirect")
        params, self._params = self._params, None
        return params


def _context() -> dict[str, Any]:
    raw = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    return json.loads(raw) if raw else {}


def make_auth(scenario: str, context: Mapping[str, Any]) -> OAuth:
    if scenario == "auth/client-credentials-basic":
        return OAuth(
            grant="client_credentials",
            client_id=context["client_id"],
            client_secret=context["client_secret"],
            token_endpoint_auth_method="client_secret_basic",
        )
    if scenario == "auth/client-credentials-jwt":
        return OAuth(
            grant="client_credentials",
            client_id=context["client_id"],
            private_key=context["private_key_pem"],
            signing_algorithm=context.get("signing_algorithm", "ES256"),
        )
    if scenario == "auth/wif-jwt-bearer":
        return OAuth(
            grant="jwt_bearer", client_id=context["client_id"], assertion=context["valid_jwt"]
        )
    if scenario == "auth/enterprise-managed-authorization":
        return OAuth(
            grant="jwt_bearer",
            client_id=context["client_id"],
            client_secret=context["client_secret"],
            token_endpoint_auth_method="client_secret_basic",
            assertion=IdJagAssertion(
                context["idp_token_endpoint"],
                context["idp_id_token"],
                idp_client_id=context.get("idp_client_id"),
            ),
        )
    return OAuth(
        handler=FetchRedirect(),
        client_id=context.get("client_id"),
        client_secret=context.get("client_secret"),
        client_metadata_url=CIMD_URL,
        client_name="mcp-resilient-conformance",
    )


async def run(scenario: str, url: str) -> None:
    auth = make_auth(scenario, _context())
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION")
    options: dict[str, Any] = {}
    if version == "2026-07-28":
        options["protocol_version"] = version
    expected = EXPECTED_REFUSAL.get(scenario)
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            async with ResilientClient(
                url, auth=auth, timeout=REQUEST_TIMEOUT, listen=False, **options
            ) as client:
                tools = await client.list_tools()
                names = [tool.name for tool in tools]
                if "test-tool" not in names:
                    raise ScenarioFailed(f"tools/list did not offer test-tool: {names}")
                result = await client.call_tool("test-tool", {})
                if result.is_error:
                    raise ScenarioFailed(f"test-tool returned isError: {result}")
    except AuthError as exc:
        if expected is not None and isinstance(exc, expected):
            print(f"conformance client: refused as required: {exc}", file=sys.stderr)
            return
        raise
    if expected is not None:
        raise ScenarioFailed(f"expected {expected.__name__}, but every call succeeded")


def main(argv: list[str]) -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if len(argv) != 2 or not scenario.startswith("auth/"):
        print("usage: MCP_CONFORMANCE_SCENARIO=auth/<name> auth_client.py <url>", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(scenario, argv[1]))
    except Exception as exc:
        if not isinstance(exc, ScenarioFailed):
            traceback.print_exception(exc)
        print(f"conformance client: scenario {scenario} FAILED: {exc!r}", file=sys.stderr)
        return 1
    print(f"conformance client: scenario {scenario} done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
