"""Bad input from servers: each case is a typed error, in bounded time, that says what to fix."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import pytest
import respx

from mcp_resilient.auth import (
    AuthError,
    AuthorizationError,
    AuthorizationRequiredError,
    AuthorizationServerChangedError,
    AuthRetryLimitError,
    DiscoveryError,
    InMemoryTokenStorage,
    IssuerMismatchError,
    LoopbackHandler,
    OAuth,
    PKCEUnsupportedError,
    RegistrationError,
    ResourceMismatchError,
    ResourceOriginError,
    TokenEndpointError,
)
from mcp_resilient.errors import MCPError

from .fakes import ASMETA, MCP, PRM, FakeAuth, Redirect
from .hostile import Answer, Approve, AuthServer, Resource, Seen, gzip_bomb, servers

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


# -- issue 16: hostile authorization servers and resources, on real loopback sockets ----------
#
# Each resource and authorization server below is its own origin (its own port), so the
# client reads their answers with its own bounded reader, as it would from real ones.


async def _get(url: str, auth: OAuth) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        with anyio.fail_after(DEADLINE):
            return await http.post(url, json={"jsonrpc": "2.0"}, auth=auth)


async def test_client_secret_never_goes_to_another_authorization_server() -> None:
    as1, as2 = AuthServer("as1"), AuthServer("as2")
    resource = Resource(as1)
    with servers(as1, as2, resource):
        auth = OAuth(grant="client_credentials", client_id="svc", client_secret="SVC-SECRET")
        assert (await _get(resource.mcp, auth)).status_code == 200
        # The resource now names another authorization server (and refuses the old token).
        resource.servers = [as2]
        with pytest.raises(AuthorizationServerChangedError) as info:
            await _get(resource.mcp, auth)
    message = str(info.value)
    assert "moved to another authorization server" in message and as2.url in message
    assert "register the client at the new authorization server" in message
    assert "SVC-SECRET" not in message
    assert as2.tokens_requested() == []
    assert "SVC-SECRET" not in as2.text() and "Authorization" not in as2.text()


async def test_configured_issuer_pins_the_credentials_from_the_start() -> None:
    as1, hostile = AuthServer("as1"), AuthServer("evil")
    resource = Resource(hostile)
    with servers(as1, hostile, resource):
        auth = OAuth(
            grant="client_credentials", client_id="svc", client_secret="SVC-SECRET", issuer=as1.url
        )
        with pytest.raises(AuthorizationServerChangedError):
            await _get(resource.mcp, auth)
    assert hostile.tokens_requested() == [] and "SVC-SECRET" not in hostile.text()


async def test_refresh_token_never_goes_to_another_authorization_server() -> None:
    as1, as2 = AuthServer("as1"), AuthServer("as2")
    as1.expires_in = 1  # always within refresh_margin: every request refreshes first
    resource = Resource(as1)
    handler = Approve()
    with servers(as1, as2, resource):
        auth = OAuth(handler=handler)
        assert (await _get(resource.mcp, auth)).status_code == 200
        # The resource names AS2; the user denies that login.
        resource.servers = [as2]
        handler.deny = True
        with pytest.raises(AuthorizationError, match="access_denied"):
            await _get(resource.mcp, auth)
        # The next request refreshes the expiring AS1 token: at AS1, never at AS2.
        with contextlib.suppress(AuthError):
            await _get(resource.mcp, auth)
    assert not any(seen.form.get("refresh_token") for seen in as2.tokens_requested())
    assert "as1-refresh" not in as2.text()


async def test_one_oauth_for_two_servers_never_sends_a_token_across_origins() -> None:
    as1 = AuthServer("as1")
    a, b = Resource(as1), Resource(as1)
    with servers(as1, a, b):
        auth = OAuth(handler=Approve())
        assert (await _get(a.mcp, auth)).status_code == 200
        with pytest.raises(ResourceOriginError) as info:
            await _get(b.mcp, auth)
    assert b.bearers() == []  # A's token never reached B
    assert "OAuth object per server" in str(info.value)


async def test_replica_at_another_origin_gets_the_token_only_after_its_metadata_names_it() -> None:
    as1 = AuthServer("as1")
    a, b, stranger = Resource(as1), Resource(as1), Resource(as1)
    b.prm_answer = Answer.json(200, {"resource": a.mcp, "authorization_servers": [as1.url]})
    with servers(as1, a, b, stranger):
        auth = OAuth(handler=Approve(), resource=a.mcp)
        assert (await _get(a.mcp, auth)).status_code == 200
        assert (await _get(b.mcp, auth)).status_code == 200  # a replica of A
        with pytest.raises(ResourceMismatchError):
            await _get(stranger.mcp, auth)  # names itself: not our resource
    token = a.bearers()[0]
    assert b.bearers() == [token]  # only after its metadata was checked: the first try had none
    assert len(b.seen) >= 2 and stranger.bearers() == []


@pytest.mark.parametrize("methods", [None, ["plain"], []])
async def test_login_is_refused_without_pkce_s256(methods: list[str] | None) -> None:
    as1 = AuthServer("as1")
    if methods is None:
        del as1.metadata["code_challenge_methods_supported"]
    else:
        as1.metadata["code_challenge_methods_supported"] = methods
    resource = Resource(as1)
    handler = Approve()
    with servers(as1, resource), pytest.raises(PKCEUnsupportedError) as info:
        await _get(resource.mcp, OAuth(handler=handler))
    assert "S256" in str(info.value) and "no login started" in str(info.value)
    assert handler.urls == [] and as1.tokens_requested() == [] and as1.registrations == []


async def test_2025_03_26_server_without_metadata_still_logs_in() -> None:
    # No resource metadata, no authorization server metadata: the spec's fallback stays.
    legacy = AuthServer("legacy")
    legacy.metadata_answer = Answer(404)

    def mcp(seen: Seen) -> Answer:
        if urlsplit(seen.path).path.startswith("/.well-known/"):
            return Answer(404)
        if urlsplit(seen.path).path in ("/authorize", "/token", "/register"):
            return AuthServer._route(legacy, seen)
        auth = seen.headers.get("Authorization", "")
        if auth[7:] in legacy.issued:
            return Answer.json(200, {"ok": True})
        return Answer(401, headers={"WWW-Authenticate": "Bearer"})

    legacy.answer = mcp
    handler = Approve()
    with servers(legacy):
        response = await _get(f"{legacy.url}/mcp", OAuth(handler=handler))
    assert response.status_code == 200 and len(handler.urls) == 1


def _bomb(**headers: str) -> Answer:
    return Answer(200, gzip_bomb(), {"Content-Encoding": "gzip", **headers})


@contextlib.contextmanager
def _peak_memory(limit: int) -> Iterator[None]:
    """Python allocations during the block stay under ``limit`` bytes at their peak."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak / 2**20:.1f} MiB"


async def test_decompression_bomb_as_resource_metadata_is_refused_in_bounded_memory() -> None:
    as1 = AuthServer("as1")
    resource = Resource(as1)
    resource.prm_answer = _bomb(**{"Content-Type": "application/json"})
    gzip_bomb()  # made before the measurement
    with servers(as1, resource), _peak_memory(24 * 2**20), pytest.raises(DiscoveryError) as info:
        await _get(resource.mcp, OAuth(handler=Approve()))
    assert "1000000-byte cap" in str(info.value)
    assert as1.seen == []  # nothing went on from a document we refused


async def test_decompression_bomb_from_the_token_endpoint_is_refused_in_bounded_memory() -> None:
    as1 = AuthServer("as1")
    as1.token_answer = lambda seen: _bomb(**{"Content-Type": "application/json"})
    resource = Resource(as1)
    gzip_bomb()
    with (
        servers(as1, resource),
        _peak_memory(24 * 2**20),
        pytest.raises(TokenEndpointError) as info,
    ):
        await _get(resource.mcp, OAuth(handler=Approve()))
    assert "1000000-byte cap" in str(info.value)


async def test_decompression_bomb_in_a_401_body_is_not_inflated() -> None:
    # httpx reads a challenged response whole before an auth flow's retry; not this one.
    as1 = AuthServer("as1")
    resource = Resource(as1)
    challenge = {"WWW-Authenticate": f'Bearer resource_metadata="{resource.prm_url}"'}

    def challenge_bomb(seen: Seen) -> Answer | None:
        if seen.headers.get("Authorization"):
            return None  # with a token: the normal answer
        return Answer(401, gzip_bomb(), {"Content-Encoding": "gzip", **challenge})

    resource.answer_mcp = challenge_bomb
    gzip_bomb()
    with servers(as1, resource), _peak_memory(24 * 2**20):
        response = await _get(resource.mcp, OAuth(handler=Approve()))
    assert response.status_code == 200


async def test_hostile_values_are_quoted_short_in_errors() -> None:
    as1 = AuthServer("as1")
    resource = Resource(as1)
    huge = "https://evil.example.com/" + "x" * 900_000
    resource.prm_answer = Answer.json(200, {"resource": huge, "authorization_servers": [as1.url]})
    with servers(as1, resource), pytest.raises(ResourceMismatchError) as info:
        await _get(resource.mcp, OAuth(handler=Approve()))
    assert len(str(info.value)) < 1000
    assert "evil.example.com" in str(info.value)


async def test_hostile_token_error_is_quoted_short() -> None:
    as1 = AuthServer("as1")
    as1.token_answer = lambda seen: Answer.json(
        400, {"error": "invalid_grant", "error_description": "y" * 500_000}
    )
    resource = Resource(as1)
    with servers(as1, resource), pytest.raises(TokenEndpointError) as info:
        await _get(resource.mcp, OAuth(handler=Approve()))
    assert info.value.error == "invalid_grant" and len(str(info.value)) < 1000


async def test_deeply_nested_json_is_a_typed_error() -> None:
    as1 = AuthServer("as1")
    resource = Resource(as1)
    resource.prm_answer = Answer(200, b"[" * 200_000 + b"]" * 200_000)
    with servers(as1, resource), pytest.raises(DiscoveryError, match="not a JSON object"):
        await _get(resource.mcp, OAuth(handler=Approve()))


async def test_step_up_logins_are_limited_per_client_not_per_request() -> None:
    as1 = AuthServer("as1")
    resource = Resource(as1)
    asked = iter(range(1000))

    def always_more(seen: Seen) -> Answer | None:
        if not seen.headers.get("Authorization"):
            return None
        scope = f"scope-{next(asked)}"
        challenge = f'Bearer error="insufficient_scope", scope="{scope}"'
        return Answer.json(403, {"error": "insufficient_scope"}, **{"WWW-Authenticate": challenge})

    resource.answer_mcp = always_more
    handler = Approve()
    auth = OAuth(handler=handler, max_step_up=2)
    with servers(as1, resource):
        for _ in range(4):
            with pytest.raises(AuthRetryLimitError):
                await _get(resource.mcp, auth)
    # The first login, then at most max_step_up step-up logins for the whole client.
    assert len(handler.urls) == 3


async def test_no_handler_is_authorization_required_not_a_registration_error() -> None:
    as1 = AuthServer("as1")  # rejects registrations without redirect_uris, as real ones do
    resource = Resource(as1)
    with servers(as1, resource), pytest.raises(AuthorizationRequiredError) as info:
        await _get(resource.mcp, OAuth())
    assert f"mcp-call {resource.mcp} login" in str(info.value)
    assert as1.registrations == [] and not any(s.path == "/register" for s in as1.seen)


# -- the login listener and the token file ------------------------------------------------------


async def test_forged_callback_does_not_hijack_the_login() -> None:
    handler = LoopbackHandler(open_url=lambda url: None)
    await handler.redirect("http://as.test/authorize?response_type=code&state=REAL-STATE")
    answers: list[int] = []

    async def forger_then_browser() -> None:
        async with httpx.AsyncClient() as http:
            # Any web page can send this to a loopback port: first, without the state.
            for query in ("state=forged&code=evil", "code=evil", "error=access_denied"):
                answers.append((await http.get(f"{handler.redirect_uri}?{query}")).status_code)
            real = await http.get(f"{handler.redirect_uri}?code=good&state=REAL-STATE")
            answers.append(real.status_code)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            tg.start_soon(forger_then_browser)
            params = await handler.callback()
    assert answers == [400, 400, 400, 200]
    assert params == {"code": "good", "state": "REAL-STATE"}


async def test_forged_callback_within_a_login_still_completes_it() -> None:
    as1 = AuthServer("as1")
    resource = Resource(as1)

    async def browser(url: str) -> None:
        query = dict(parse_qsl(urlsplit(url).query))
        redirect = query["redirect_uri"]
        async with httpx.AsyncClient() as http:
            forged = await http.get(f"{redirect}?state=forged&code=evil&iss={as1.url}")
            assert forged.status_code == 400
            params = {"code": "good", "state": query["state"], "iss": as1.url}
            assert (await http.get(redirect, params=params)).status_code == 200

    opened: list[str] = []

    async def open_and_visit(url: str) -> None:
        opened.append(url)
        tg.start_soon(browser, url)

    handler = LoopbackHandler(open_url=open_and_visit)
    with servers(as1, resource):
        async with anyio.create_task_group() as tg:
            response = await _get(resource.mcp, OAuth(handler=handler, callback_timeout=20))
    assert response.status_code == 200
    assert [s.form.get("code") for s in as1.tokens_requested()] == ["good"]


async def test_listener_closes_when_opening_the_browser_fails() -> None:
    def broken(url: str) -> None:
        raise OSError("no browser here")

    handler = LoopbackHandler(open_url=broken)
    with pytest.raises(OSError, match="no browser"):
        await handler.redirect("http://as.test/authorize?state=s")
    with pytest.raises(httpx.ConnectError):  # nothing listens any more
        async with httpx.AsyncClient() as http:
            await http.get(handler.redirect_uri)


_SAVER = """
import sys, anyio
from mcp_resilient.auth import FileTokenStorage

async def main() -> None:
    storage = FileTokenStorage(sys.argv[1])
    for i in range(int(sys.argv[3])):
        await storage.save(f"token:{sys.argv[2]}-{i}", {"access_token": f"{sys.argv[2]}-{i}"})

anyio.run(main)
"""


def test_two_processes_saving_to_one_token_file_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    count = 150
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    workers = [
        subprocess.Popen([sys.executable, "-c", _SAVER, str(path), name, str(count)], env=env)
        for name in ("a", "b")
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    data = json.loads(path.read_text())
    assert len(data) == 2 * count, f"{2 * count - len(data)} entries lost"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- the CLI's advice on a 401 (issue 19) -----------------------------------------------------


def _cli_401(args: list[str], resource: Resource, capsys: pytest.CaptureFixture[str]) -> str:
    from mcp_resilient.cli import main

    assert main([resource.mcp, *args, "tools", "--timeout", "10"]) == 4
    return capsys.readouterr().err


def test_cli_401_from_an_oauth_server_suggests_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_CALL_TOKEN_FILE", str(tmp_path / "none.json"))
    as1 = AuthServer("as1")
    resource = Resource(as1)
    with servers(as1, resource):
        plain = _cli_401([], resource, capsys)
        with_header = _cli_401(["-H", "Authorization: Bearer stale"], resource, capsys)
    assert f"mcp-call {resource.mcp} login" in plain
    assert "-H 'Authorization: Bearer TOKEN'" not in plain
    assert f"mcp-call {resource.mcp} login" in with_header
    assert "refused the token passed with -H" in with_header
    assert "-H 'Authorization: Bearer TOKEN'" not in with_header


def test_cli_401_without_oauth_metadata_keeps_the_header_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCP_CALL_TOKEN_FILE", str(tmp_path / "none.json"))
    as1 = AuthServer("as1")
    resource = Resource(as1)
    resource.prm_answer = Answer(404)
    with servers(as1, resource):
        plain = _cli_401([], resource, capsys)
        with_header = _cli_401(["-H", "Authorization: Bearer stale"], resource, capsys)
    assert "-H 'Authorization: Bearer TOKEN'" in plain and "login" not in plain
    assert "refused the credentials passed with -H" in with_header
    assert "-H 'Authorization: Bearer TOKEN'" not in with_header


async def test_registration_for_another_redirect_uri_is_not_reused() -> None:
    # A random loopback port per login: the stored registration names the old one.
    as1 = AuthServer("as1")
    resource = Resource(as1)
    storage = InMemoryTokenStorage()
    first, second = Approve(), Approve()
    second.redirect_uri = "http://127.0.0.1:10/callback"
    with servers(as1, resource):
        await _get(resource.mcp, OAuth(handler=first, storage=storage))
        await storage.delete(f"token:{resource.mcp}")
        await _get(resource.mcp, OAuth(handler=second, storage=storage))
        await storage.delete(f"token:{resource.mcp}")
        await _get(resource.mcp, OAuth(handler=second, storage=storage))
    assert [r["redirect_uris"] for r in as1.registrations] == [
        [first.redirect_uri],
        [second.redirect_uri],
    ]


async def test_refresh_without_a_handler_reuses_the_stored_registration() -> None:
    # What `mcp-call URL tools` does after `login`: no handler, a stored token to refresh.
    as1 = AuthServer("as1")
    as1.expires_in = 1  # always within refresh_margin
    resource = Resource(as1)
    storage = InMemoryTokenStorage()
    with servers(as1, resource):
        await _get(resource.mcp, OAuth(handler=Approve(), storage=storage))
        response = await _get(resource.mcp, OAuth(storage=storage))
    assert response.status_code == 200
    assert len(as1.registrations) == 1
    assert [s.form["grant_type"] for s in as1.tokens_requested()] == [
        "authorization_code",
        "refresh_token",
    ]
