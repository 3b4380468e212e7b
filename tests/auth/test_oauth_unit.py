"""The OAuth flow's decisions: discovery order, PKCE, scopes, step-up, refresh, identity."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import pytest
import respx

from mcp_resilient.auth import (
    AuthRetryLimitError,
    FileTokenStorage,
    InMemoryTokenStorage,
    OAuth,
)
from mcp_resilient.auth._discovery import (
    as_metadata_urls,
    canonical_resource,
    parse_challenge,
    prm_urls,
    resource_allowed,
)

from .fakes import AS, MCP, PRM, FakeAuth, Redirect, s256

pytestmark = pytest.mark.anyio


async def _calls(fake: FakeAuth, auth: OAuth, n: int = 1) -> list[httpx.Response]:
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(10):
                return [await http.post(MCP, json={}, auth=auth) for _ in range(n)]


# -- discovery ------------------------------------------------------------------------------


def test_well_known_orders() -> None:
    assert prm_urls("https://h.test/api/mcp") == [
        "https://h.test/.well-known/oauth-protected-resource/api/mcp",
        "https://h.test/.well-known/oauth-protected-resource",
    ]
    assert as_metadata_urls("https://as.test/tenant1") == [
        "https://as.test/.well-known/oauth-authorization-server/tenant1",
        "https://as.test/.well-known/openid-configuration/tenant1",
        "https://as.test/tenant1/.well-known/openid-configuration",
    ]
    assert as_metadata_urls("https://as.test/") == [
        "https://as.test/.well-known/oauth-authorization-server",
        "https://as.test/.well-known/openid-configuration",
    ]


def test_challenge_parsing() -> None:
    c = parse_challenge(
        'Bearer error="insufficient_scope", scope="a b", resource_metadata="https://x/y"'
    )
    assert (c.scheme, c.error, c.scope, c.resource_metadata) == (
        "Bearer",
        "insufficient_scope",
        "a b",
        "https://x/y",
    )
    assert parse_challenge(None).scope is None
    assert parse_challenge("garbage,,,=").resource_metadata is None


def test_resource_match() -> None:
    assert resource_allowed("https://h.test/mcp", "https://h.test/mcp")
    assert resource_allowed("https://h.test", "https://h.test/mcp")
    assert not resource_allowed("https://evil.test/mcp", "https://h.test/mcp")
    assert not resource_allowed("https://h.test/other", "https://h.test/mcp")
    assert canonical_resource("HTTPS://H.test/mcp/?x=1#f") == "https://h.test/mcp"


async def test_discovery_order_without_any_metadata_falls_back_to_2025_03_26() -> None:
    fake = FakeAuth()
    fake.prm = None  # type: ignore[assignment]
    fake.challenge = "Bearer"
    seen: list[str] = []
    original = fake._as

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.url.path.startswith("/.well-known/"):
            return httpx.Response(404)
        return original(request)

    fake._as = record  # type: ignore[method-assign]
    fake.metadata["issuer"] = "http://mcp.test"
    with respx.mock(assert_all_called=False) as router:
        router.route(url__startswith="http://mcp.test/.well-known/").mock(side_effect=record)
        router.route(host="mcp.test", path__in=("/authorize", "/token", "/register")).mock(
            side_effect=record
        )
        router.route(url__startswith="http://mcp.test/").mock(side_effect=fake._mcp)
        async with httpx.AsyncClient() as http:
            handler = Redirect(fake)
            fake.iss_in_redirect = None
            response = await http.post(MCP, json={}, auth=OAuth(handler=handler))
    assert response.status_code == 200
    assert seen == [
        "GET http://mcp.test/.well-known/oauth-protected-resource/mcp",
        "GET http://mcp.test/.well-known/oauth-protected-resource",
        "GET http://mcp.test/.well-known/oauth-authorization-server",
        "GET http://mcp.test/.well-known/openid-configuration",
        "POST http://mcp.test/register",
        "POST http://mcp.test/token",
    ]
    assert handler.urls[0].startswith("http://mcp.test/authorize?")
    # No protected resource metadata: no resource indicator either (2025-03-26).
    assert "resource" not in fake.token_requests[0]


async def test_resource_metadata_from_the_challenge_comes_first() -> None:
    fake = FakeAuth()
    custom = "http://mcp.test/.well-known/custom-location"
    fake.challenge = f'Bearer resource_metadata="{custom}"'
    fake.prm_location = custom
    original = fake._prm

    def prm(request: httpx.Request) -> httpx.Response:
        fake.as_requests.append(request)
        if str(request.url) == custom:
            return httpx.Response(200, json=fake.prm)
        return original(request)

    fake._prm = prm  # type: ignore[method-assign]
    [response] = await _calls(fake, OAuth(handler=Redirect(fake)))
    assert response.status_code == 200
    first = [str(r.url) for r in fake.as_requests if r.url.host == "mcp.test"]
    assert first == [custom]


# -- PKCE, resource, identity ---------------------------------------------------------------


async def test_pkce_s256_and_resource_indicator() -> None:
    fake = FakeAuth()
    handler = Redirect(fake)
    [response] = await _calls(fake, OAuth(handler=handler))
    assert response.status_code == 200
    query = fake.authorize_requests[0]
    [token] = fake.grants("authorization_code")
    verifier = token["code_verifier"]
    assert 43 <= len(verifier) <= 128
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == s256(verifier)
    assert query["resource"] == token["resource"] == MCP
    assert token["redirect_uri"] == handler.redirect_uri == query["redirect_uri"]
    assert fake.registrations[0]["application_type"] == "native"
    assert "refresh_token" in fake.registrations[0]["grant_types"]


async def test_credentials_and_tokens_stay_where_they_belong() -> None:
    fake = FakeAuth()
    fake.metadata["token_endpoint_auth_methods_supported"] = ["client_secret_basic"]
    auth = OAuth(handler=Redirect(fake), client_id="cid", client_secret="sec")
    await _calls(fake, auth, n=2)
    for request in fake.as_requests:
        assert "Bearer" not in request.headers.get("authorization", "")
    metadata_requests = [r for r in fake.as_requests if r.method == "GET"]
    assert all("authorization" not in r.headers for r in metadata_requests)
    assert fake.token_headers[0]["authorization"].startswith("Basic ")
    assert fake.mcp_requests[-1].headers["authorization"] == "Bearer tok-1"


@pytest.mark.parametrize(
    ("supported", "method"),
    [(["client_secret_post"], "post"), (["client_secret_basic"], "basic"), (None, "basic")],
)
async def test_secret_auth_method_follows_metadata(
    supported: list[str] | None, method: str
) -> None:
    fake = FakeAuth()
    if supported is None:
        del fake.metadata["token_endpoint_auth_methods_supported"]
    else:
        fake.metadata["token_endpoint_auth_methods_supported"] = supported
    await _calls(fake, OAuth(handler=Redirect(fake), client_id="cid", client_secret="sec"))
    [form] = fake.token_requests
    if method == "post":
        assert form["client_secret"] == "sec" and "authorization" not in fake.token_headers[0]
    else:
        assert "client_secret" not in form and fake.token_headers[0]["authorization"]


async def test_client_id_metadata_document_is_used_when_offered() -> None:
    fake = FakeAuth()
    fake.metadata["client_id_metadata_document_supported"] = True
    url = "https://client.example/metadata.json"
    await _calls(fake, OAuth(handler=Redirect(fake), client_metadata_url=url))
    assert fake.registrations == []
    assert fake.authorize_requests[0]["client_id"] == url


async def test_private_key_jwt_client_credentials() -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256")
    pem = key.as_pem(private=True).decode()
    fake = FakeAuth()
    fake.metadata["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    auth = OAuth(grant="client_credentials", client_id="svc", private_key=pem)
    [response] = await _calls(fake, auth)
    assert response.status_code == 200
    [form] = fake.token_requests
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"].endswith("jwt-bearer")
    claims = jwt.decode(form["client_assertion"], key).claims
    assert claims["iss"] == claims["sub"] == "svc"
    assert claims["aud"] == AS
    assert form["resource"] == MCP


# -- scopes ---------------------------------------------------------------------------------


async def test_scope_from_challenge_wins() -> None:
    fake = FakeAuth()
    fake.challenge = f'Bearer scope="mcp:a", resource_metadata="{PRM}"'
    fake.prm["scopes_supported"] = ["mcp:a", "mcp:b"]
    await _calls(fake, OAuth(handler=Redirect(fake)))
    assert fake.authorize_requests[0]["scope"] == "mcp:a"


async def test_scope_from_scopes_supported_then_omitted() -> None:
    fake = FakeAuth()
    fake.prm["scopes_supported"] = ["mcp:a", "mcp:b"]
    await _calls(fake, OAuth(handler=Redirect(fake)))
    assert fake.authorize_requests[0]["scope"] == "mcp:a mcp:b"
    bare = FakeAuth()
    await _calls(bare, OAuth(handler=Redirect(bare)))
    assert "scope" not in bare.authorize_requests[0]


async def test_offline_access_only_when_offered() -> None:
    fake = FakeAuth()
    fake.prm["scopes_supported"] = ["mcp:a"]
    fake.metadata["scopes_supported"] = ["mcp:a", "offline_access"]
    await _calls(fake, OAuth(handler=Redirect(fake)))
    assert fake.authorize_requests[0]["scope"] == "mcp:a offline_access"
    off = FakeAuth()
    off.prm["scopes_supported"] = ["mcp:a"]
    off.metadata["scopes_supported"] = ["mcp:a"]
    await _calls(off, OAuth(handler=Redirect(off)))
    assert off.authorize_requests[0]["scope"] == "mcp:a"


async def test_step_up_unions_scopes_and_has_a_limit() -> None:
    fake = FakeAuth()
    fake.challenge = f'Bearer scope="mcp:read", resource_metadata="{PRM}"'
    fake.resource_answer = lambda request: (
        httpx.Response(
            403,
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="mcp:write"'},
        )
        if request.headers.get("authorization")
        else None
    )
    with pytest.raises(AuthRetryLimitError) as info:
        await _calls(fake, OAuth(handler=Redirect(fake), max_step_up=2))
    scopes = [q.get("scope") for q in fake.authorize_requests]
    assert scopes == ["mcp:read", "mcp:read mcp:write", "mcp:read mcp:write"]
    assert "insufficient_scope" in str(info.value)


async def test_step_up_succeeds_when_granted() -> None:
    fake = FakeAuth()
    granted: dict[str, str] = {}

    def answer(request: httpx.Request) -> httpx.Response | None:
        token = request.headers.get("authorization", "")[7:]
        if token and "write" not in granted.get(token, ""):
            return httpx.Response(
                403, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="w"'}
            )
        return None

    def token_answer(form: dict[str, str]) -> httpx.Response:
        data = fake.issue()
        scope = fake.authorize_requests[-1].get("scope", "")
        granted[data["access_token"]] = "write" if "w" in scope.split() else ""
        return httpx.Response(200, json=data)

    fake.resource_answer = answer
    fake.token_answer = token_answer
    [response] = await _calls(fake, OAuth(handler=Redirect(fake)))
    assert response.status_code == 200
    assert len(fake.authorize_requests) == 2


# -- refresh --------------------------------------------------------------------------------


async def test_refresh_on_401_once() -> None:
    fake = FakeAuth()
    auth = OAuth(handler=Redirect(fake))
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        async with httpx.AsyncClient() as http:
            assert (await http.post(MCP, json={}, auth=auth)).status_code == 200
            fake.valid.clear()  # the server forgets the token (e.g. it was revoked)
            assert (await http.post(MCP, json={}, auth=auth)).status_code == 200
    assert len(fake.grants("authorization_code")) == 1
    [refresh] = fake.grants("refresh_token")
    assert refresh["refresh_token"] == "ref-1" and refresh["resource"] == MCP


async def test_refresh_before_expiry() -> None:
    fake = FakeAuth()
    fake.expires_in = 5
    auth = OAuth(handler=Redirect(fake), refresh_margin=60)
    responses = await _calls(fake, auth, n=2)
    assert [r.json()["token"] for r in responses] == ["tok-1", "tok-2"]
    assert len(fake.grants("refresh_token")) == 1
    # The second call never saw a 401: the token was refreshed before it went out.
    assert [r.headers.get("authorization") for r in fake.mcp_requests] == [
        None,
        "Bearer tok-1",
        "Bearer tok-2",
    ]


async def test_single_flight_refresh_across_concurrent_calls() -> None:
    fake = FakeAuth()
    fake.expires_in = 5
    auth = OAuth(handler=Redirect(fake), refresh_margin=60)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        async with httpx.AsyncClient() as http:
            await http.post(MCP, json={}, auth=auth)
            fake.expires_in = 3600
            results: list[int] = []

            async def one() -> None:
                results.append((await http.post(MCP, json={}, auth=auth)).status_code)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for _ in range(10):
                        tg.start_soon(one)
    assert results == [200] * 10
    assert len(fake.grants("refresh_token")) == 1


async def test_single_flight_after_401_across_concurrent_calls() -> None:
    fake = FakeAuth()
    auth = OAuth(handler=Redirect(fake))
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        async with httpx.AsyncClient() as http:
            results: list[int] = []

            async def one() -> None:
                results.append((await http.post(MCP, json={}, auth=auth)).status_code)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(one)
    assert results == [200] * 8
    assert len(fake.authorize_requests) == 1
    assert len(fake.token_requests) == 1


async def test_reregisters_when_the_resource_moves_to_another_server() -> None:
    fake = FakeAuth()
    auth = OAuth(handler=Redirect(fake))
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        router.route(url__startswith="http://as2.test").mock(side_effect=fake._as)
        async with httpx.AsyncClient() as http:
            await http.post(MCP, json={}, auth=auth)
            fake.prm["authorization_servers"] = ["http://as2.test"]
            fake.metadata = {
                **fake.metadata,
                "issuer": "http://as2.test",
                "token_endpoint": "http://as2.test/token",
                "registration_endpoint": "http://as2.test/register",
                "authorization_endpoint": "http://as2.test/authorize",
            }
            fake.valid.clear()
            fake.iss_in_redirect = "http://as2.test"
            assert (await http.post(MCP, json={}, auth=auth)).status_code == 200
    assert len(fake.registrations) == 2
    assert fake.authorize_requests[1]["client_id"] == "client-2"
    assert fake.grants("refresh_token") == []  # the old server's refresh token stays there


# -- storage --------------------------------------------------------------------------------


async def test_file_storage_is_private_and_survives(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "tokens.json"
    store = FileTokenStorage(path)
    await store.save("token:x", {"access_token": "a"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert await FileTokenStorage(path).load("token:x") == {"access_token": "a"}
    await store.delete("token:x")
    assert json.loads(path.read_text()) == {}


async def test_stored_token_is_reused_without_login() -> None:
    fake = FakeAuth()
    storage = InMemoryTokenStorage()
    await _calls(fake, OAuth(handler=Redirect(fake), storage=storage))
    handler = Redirect(fake)
    [response] = await _calls(fake, OAuth(handler=handler, storage=storage))
    assert response.status_code == 200 and handler.urls == []
    saved = await storage.load(f"token:{MCP}")
    assert saved is not None and saved["expires_at"] > time.time()


def test_authorization_url_is_well_formed() -> None:
    # Guards the redirect step's contract: Redirect parses these with parse_qsl.
    query = dict(parse_qsl(urlsplit("http://as.test/authorize?a=1&b=x%20y").query))
    assert query == {"a": "1", "b": "x y"}
