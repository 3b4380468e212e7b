"""Bad input from servers: each case is a typed error, in bounded time, that says what to fix."""

from __future__ import annotations

import anyio
import httpx
import pytest
import respx

from mcp_resilient.auth import (
    AuthError,
    AuthorizationError,
    AuthorizationRequiredError,
    AuthRetryLimitError,
    DiscoveryError,
    IssuerMismatchError,
    OAuth,
    RegistrationError,
    ResourceMismatchError,
    TokenEndpointError,
)
from mcp_resilient.errors import MCPError

from .fakes import ASMETA, MCP, PRM, FakeAuth, Redirect

pytestmark = pytest.mark.anyio

DEADLINE = 10.0


async def _call(fake: FakeAuth, auth: OAuth) -> httpx.Response:
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(DEADLINE):
                return await http.post(MCP, json={"jsonrpc": "2.0"}, auth=auth)


def _interactive(fake: FakeAuth, **kwargs: object) -> OAuth:
    return OAuth(handler=Redirect(fake), **kwargs)  # type: ignore[arg-type]


async def test_malformed_resource_metadata_is_a_discovery_error() -> None:
    fake = FakeAuth()
    fake.prm = None  # type: ignore[assignment]
    fake.install = _with_prm_body(fake, b"<html>not metadata</html>")  # type: ignore[method-assign]
    with pytest.raises(DiscoveryError) as info:
        await _call(fake, _interactive(fake))
    assert "not a JSON object" in str(info.value)
    assert PRM in str(info.value)
    assert "fix the document" in str(info.value)
    assert fake.token_requests == []


def _with_prm_body(fake: FakeAuth, body: bytes):  # type: ignore[no-untyped-def]
    original = FakeAuth.install

    def install(router: respx.Router) -> None:
        router.get(PRM).mock(
            return_value=httpx.Response(200, content=body, headers={"content-type": "text/html"})
        )
        original(fake, router)

    return install


async def test_metadata_without_resource_is_a_discovery_error() -> None:
    fake = FakeAuth()
    fake.prm = {"authorization_servers": ["http://as.test"]}
    with pytest.raises(DiscoveryError, match="no 'resource'"):
        await _call(fake, _interactive(fake))


async def test_authorization_server_metadata_without_token_endpoint() -> None:
    fake = FakeAuth()
    del fake.metadata["token_endpoint"]
    with pytest.raises(DiscoveryError) as info:
        await _call(fake, _interactive(fake))
    assert "token_endpoint" in str(info.value)
    assert ASMETA in str(info.value)


async def test_token_endpoint_answering_html_is_a_token_endpoint_error() -> None:
    fake = FakeAuth()
    fake.token_answer = lambda form: httpx.Response(
        200, content=b"<!doctype html><p>Sign in</p>", headers={"content-type": "text/html"}
    )
    with pytest.raises(TokenEndpointError) as info:
        await _call(fake, _interactive(fake))
    assert "text/html" in str(info.value)
    assert "points at a web page" in str(info.value)


async def test_token_endpoint_html_error_page() -> None:
    fake = FakeAuth()
    fake.token_answer = lambda form: httpx.Response(
        502, content=b"<html>Bad gateway</html>", headers={"content-type": "text/html"}
    )
    with pytest.raises(TokenEndpointError) as info:
        await _call(fake, _interactive(fake))
    assert info.value.status_code == 502
    assert "not an OAuth answer" in str(info.value)


async def test_token_endpoint_oauth_error_names_the_error() -> None:
    fake = FakeAuth()
    fake.token_answer = lambda form: httpx.Response(
        400, json={"error": "invalid_client", "error_description": "unknown client"}
    )
    with pytest.raises(TokenEndpointError) as info:
        await _call(fake, _interactive(fake))
    assert info.value.error == "invalid_client"
    assert "Check client_id" in str(info.value)


async def test_iss_mismatch_in_redirect_is_refused_before_the_token_request() -> None:
    fake = FakeAuth()
    fake.iss_in_redirect = "https://evil.example.com"
    with pytest.raises(IssuerMismatchError) as info:
        await _call(fake, _interactive(fake))
    assert "evil.example.com" in str(info.value)
    assert "log in again" in str(info.value)
    assert fake.token_requests == []


async def test_metadata_issuer_mismatch_is_refused() -> None:
    fake = FakeAuth()
    fake.metadata["issuer"] = "https://attacker.example.com"
    with pytest.raises(IssuerMismatchError, match="attacker"):
        await _call(fake, _interactive(fake))
    assert fake.registrations == [] and fake.authorize_requests == []


async def test_resource_mismatch_is_refused() -> None:
    fake = FakeAuth()
    fake.prm["resource"] = "https://evil.example.com/mcp"
    with pytest.raises(ResourceMismatchError) as info:
        await _call(fake, _interactive(fake))
    assert "OAuth(resource=" in str(info.value)
    assert fake.authorize_requests == []


async def test_endless_401_stops_with_a_typed_error() -> None:
    fake = FakeAuth()
    fake.resource_answer = lambda request: httpx.Response(
        401, headers={"WWW-Authenticate": fake.challenge}
    )
    with pytest.raises(AuthRetryLimitError) as info:
        await _call(fake, _interactive(fake))
    assert "rejected a freshly issued access token" in str(info.value)
    assert isinstance(info.value, AuthError) and isinstance(info.value, MCPError)
    # One login, one retry with the fresh token, then stop: the user is not asked twice.
    assert len(fake.authorize_requests) == 1
    assert len(fake.mcp_requests) == 2


async def test_endless_401_with_a_stored_token_refreshes_then_logs_in_once() -> None:
    fake = FakeAuth()
    auth = _interactive(fake)
    await _call(fake, auth)
    fake.resource_answer = lambda request: httpx.Response(
        401, headers={"WWW-Authenticate": fake.challenge}
    )
    with pytest.raises(AuthRetryLimitError):
        await _call(fake, auth)
    assert len(fake.grants("refresh_token")) == 1
    assert len(fake.authorize_requests) == 2  # the first login, then one more after the refresh


async def test_unreachable_token_endpoint_is_a_token_endpoint_error() -> None:
    fake = FakeAuth()
    down = "http://as.test/token-down"
    fake.metadata["token_endpoint"] = down
    original = FakeAuth.install

    def install(router: respx.Router) -> None:
        router.post(down).mock(side_effect=httpx.ConnectError("connection refused"))
        original(fake, router)

    fake.install = install  # type: ignore[method-assign]
    with pytest.raises(TokenEndpointError, match=f"token request at {down} failed"):
        await _call(fake, _interactive(fake))


async def test_hanging_metadata_is_bounded() -> None:
    fake = FakeAuth()

    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(60)
        return httpx.Response(500)

    original = FakeAuth.install

    def install(router: respx.Router) -> None:
        router.get(ASMETA).mock(side_effect=hang)
        router.get("http://as.test/.well-known/openid-configuration").mock(side_effect=hang)
        original(fake, router)

    fake.install = install  # type: ignore[method-assign]
    auth = _interactive(fake, http_timeout=0.3)
    with anyio.fail_after(DEADLINE):
        # No metadata in time: the 2025-03-26 default endpoints are used, and they work.
        response = await _call(fake, auth)
    assert response.status_code == 200


async def test_login_that_never_returns_is_bounded() -> None:
    fake = FakeAuth()

    class Never(Redirect):
        async def callback(self):  # type: ignore[no-untyped-def]
            await anyio.sleep(60)

    auth = OAuth(handler=Never(fake), callback_timeout=0.3)
    with pytest.raises(AuthorizationError, match="no answer from the login"):
        await _call(fake, auth)


async def test_wrong_state_is_refused() -> None:
    fake = FakeAuth()
    handler = Redirect(fake)
    handler.override = {"state": "forged"}
    with pytest.raises(AuthorizationError, match="wrong state"):
        await _call(fake, OAuth(handler=handler))
    assert fake.token_requests == []


async def test_denied_login_names_the_error() -> None:
    fake = FakeAuth()
    handler = Redirect(fake)
    handler.override = {"code": None, "error": "access_denied"}
    with pytest.raises(AuthorizationError, match="access_denied"):
        await _call(fake, OAuth(handler=handler))


async def test_no_registration_and_no_client_id() -> None:
    fake = FakeAuth()
    del fake.metadata["registration_endpoint"]
    with pytest.raises(RegistrationError) as info:
        await _call(fake, _interactive(fake))
    assert "client_id=" in str(info.value)


async def test_no_handler_says_how_to_log_in() -> None:
    fake = FakeAuth()
    with pytest.raises(AuthorizationRequiredError) as info:
        await _call(fake, OAuth())
    assert "login" in str(info.value)


async def test_dpop_token_is_refused_clearly() -> None:
    fake = FakeAuth()
    fake.token_answer = lambda form: httpx.Response(
        200, json={"access_token": "x", "token_type": "DPoP"}
    )
    with pytest.raises(TokenEndpointError, match="only Bearer"):
        await _call(fake, _interactive(fake))


async def test_error_response_from_the_wrong_issuer_is_not_acted_on() -> None:
    fake = FakeAuth()
    fake.iss_in_redirect = "https://evil.example.com"
    handler = Redirect(fake)
    handler.override = {"code": None, "error": "access_denied", "error_description": "go here"}
    with pytest.raises(IssuerMismatchError) as info:
        await _call(fake, OAuth(handler=handler))
    assert "go here" not in str(info.value)  # the forged error text is not shown
