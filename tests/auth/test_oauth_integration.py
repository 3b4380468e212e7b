"""OAuth end to end: a real FastMCP authorization server and protected FastMCP servers.

The rig (``tests/auth/oauth_rig.py``) runs each role in its own process on loopback: one
authorization server issuing RS256 JWT access tokens, and resource servers that verify
those tokens with its public key, so replicas share nothing but the key. The login is
driven through ``LoopbackHandler``: a "browser" thread follows the authorization server's
redirect to the handler's real listener on 127.0.0.1.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from examples._launch import ServerProcess
from mcp_resilient import ResilientClient
from mcp_resilient.auth import FileTokenStorage, LoopbackHandler, OAuth
from mcp_resilient.errors import HTTPStatusError

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

RIG = "tests.auth.oauth_rig"
DEADLINE = 60.0


class Browser:
    """Stands in for the user's browser: follows the login redirects in a thread."""

    def __init__(self) -> None:
        self.visits: list[str] = []
        self.errors: list[BaseException] = []

    def __call__(self, url: str) -> None:
        self.visits.append(url)
        threading.Thread(target=self._visit, args=(url,), daemon=True).start()

    def _visit(self, url: str) -> None:
        try:
            with httpx.Client(follow_redirects=True, timeout=20.0) as http:
                http.get(url).raise_for_status()
        except BaseException as exc:  # reported by the test that used this browser
            self.errors.append(exc)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from fastmcp.server.auth.providers.jwt import RSAKeyPair

    pair = RSAKeyPair.generate()
    folder = tmp_path_factory.mktemp("keys")
    private, public = folder / "private.pem", folder / "public.pem"
    private.write_text(pair.private_key.get_secret_value())
    public.write_text(pair.public_key)
    return private, public


def _start(instance: str, *args: str) -> ServerProcess:
    return ServerProcess(instance=instance, module=RIG, extra_args=list(args)).start_healthy(30)


@pytest.fixture
def auth_server(keys: tuple[Path, Path], request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    ttl = getattr(request, "param", 3600)
    server = _start("as", "--role", "as", "--key-file", str(keys[0]), "--ttl", str(ttl))
    try:
        yield server
    finally:
        server.kill()


def _resource(
    keys: tuple[Path, Path], auth_server: ServerProcess, instance: str, *extra: str
) -> ServerProcess:
    return _start(
        instance,
        "--role",
        "rs",
        "--key-file",
        str(keys[1]),
        "--as-url",
        auth_server.base_url,
        *extra,
    )


@pytest.fixture
def replicas(keys: tuple[Path, Path], auth_server: ServerProcess) -> Iterator[list[ServerProcess]]:
    first = _resource(keys, auth_server, "rs-1")
    second = None
    try:
        # Both replicas publish the same resource identifier (the first one's URL).
        second = _resource(keys, auth_server, "rs-2", "--resource-base", first.base_url)
        first_again = first
        yield [first_again, second]
    finally:
        first.kill()
        if second is not None:
            second.kill()


def _stats(auth_server: ServerProcess) -> dict[str, int]:
    return dict(httpx.get(f"{auth_server.base_url}/stats", timeout=10).json())


def _text(result: object) -> str:
    return "".join(getattr(block, "text", "") for block in getattr(result, "content", []))


async def test_login_call_and_cached_token(
    replicas: list[ServerProcess], auth_server: ServerProcess, tmp_path: Path
) -> None:
    browser = Browser()
    path = tmp_path / "config" / "tokens.json"
    auth = OAuth(handler=LoopbackHandler(open_url=browser), storage=FileTokenStorage(path))
    with anyio.fail_after(DEADLINE):
        async with ResilientClient(replicas[0].url, auth=auth, listen=False) as client:
            result = await client.call_tool("add", {"a": 2, "b": 3})
    assert browser.errors == []
    assert len(browser.visits) == 1
    assert _text(result) == "5"
    assert _stats(auth_server)["authorization_code"] == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # A later run (no login handler at all) reuses the stored token.
    again = OAuth(storage=FileTokenStorage(path))
    with anyio.fail_after(DEADLINE):
        async with ResilientClient(replicas[0].url, auth=again, listen=False) as client:
            assert _text(await client.call_tool("whoami", {})) == "rs-1"
    assert _stats(auth_server)["authorization_code"] == 1


@pytest.mark.parametrize("auth_server", [3], indirect=True)
async def test_expired_token_is_refreshed(
    replicas: list[ServerProcess], auth_server: ServerProcess
) -> None:
    browser = Browser()
    storage = FileTokenStorage(Path(os.environ.get("TMPDIR", "/tmp")) / f"t-{time.time_ns()}.json")
    auth = OAuth(handler=LoopbackHandler(open_url=browser), storage=storage, refresh_margin=0)
    with anyio.fail_after(DEADLINE):
        async with ResilientClient(replicas[0].url, auth=auth, listen=False) as client:
            assert _text(await client.call_tool("add", {"a": 1, "b": 1})) == "2"
            first = auth._token["access_token"] if auth._token else None
            assert first is not None
            # Wait (bounded) until the resource server itself rejects the first token.
            deadline = time.monotonic() + 30
            while True:
                async with httpx.AsyncClient(timeout=10) as http:
                    probe = await http.post(
                        replicas[0].url,
                        headers={"Authorization": f"Bearer {first}", "Accept": "application/json"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    )
                if probe.status_code == 401:
                    break
                assert time.monotonic() < deadline, "the token never expired"
                await anyio.sleep(0.2)  # poll interval of the bounded wait above
            assert _text(await client.call_tool("add", {"a": 2, "b": 2})) == "4"
            second = auth._token["access_token"] if auth._token else None
    assert second is not None and second != first
    stats = _stats(auth_server)
    assert stats == {"authorization_code": 1, "refresh_token": stats["refresh_token"]}
    assert stats["refresh_token"] >= 1
    assert len(browser.visits) == 1  # refreshed, not logged in again
    os.unlink(storage.path)


async def test_kill_one_replica_same_token_on_the_other(
    replicas: list[ServerProcess], auth_server: ServerProcess
) -> None:
    browser = Browser()
    first, second = replicas
    auth = OAuth(handler=LoopbackHandler(open_url=browser), resource=first.url)
    with anyio.fail_after(DEADLINE):
        async with ResilientClient([first.url, second.url], auth=auth, listen=False) as client:
            answered = _text(await client.call_tool("whoami", {}))
            token = auth._token["access_token"] if auth._token else None
            victim, survivor = (first, "rs-2") if answered == "rs-1" else (second, "rs-1")
            victim.kill()
            assert _text(await client.call_tool("whoami", {})) == survivor
            assert _text(await client.call_tool("add", {"a": 20, "b": 22})) == "42"
    assert (auth._token or {}).get("access_token") == token  # the very same token
    assert _stats(auth_server) == {"authorization_code": 1, "refresh_token": 0}
    assert len(browser.visits) == 1


async def test_token_never_sent_to_a_foreign_origin_on_redirect(
    keys: tuple[Path, Path], auth_server: ServerProcess
) -> None:
    sink = _start("sink", "--role", "sink")
    server = None
    try:
        server = _resource(keys, auth_server, "rs-r", "--redirect-to", f"{sink.base_url}/mcp")
        auth = OAuth(handler=LoopbackHandler(open_url=Browser()), resource=server.url)
        with anyio.fail_after(DEADLINE):
            async with ResilientClient(server.url, auth=auth, listen=False) as client:
                assert _text(await client.call_tool("add", {"a": 1, "b": 2})) == "3"
            token = (auth._token or {})["access_token"]
            moved = f"{server.base_url}/moved"
            # Our client never follows redirects: the 307 is an error, nothing goes out.
            with pytest.raises(HTTPStatusError) as info:
                async with ResilientClient(moved, auth=auth, listen=False, timeout=10) as client:
                    await client.call_tool("add", {"a": 1, "b": 2})
            assert info.value.status_code == 307
            # Even a caller's client that follows redirects does not carry the token over.
            async with httpx.AsyncClient(follow_redirects=True) as http:
                with pytest.raises(HTTPStatusError):
                    async with ResilientClient(
                        moved, auth=auth, listen=False, timeout=10, http_client=http
                    ) as client:
                        await client.call_tool("add", {"a": 1, "b": 2})
        async with httpx.AsyncClient(timeout=10) as http:
            seen = (await http.get(f"{sink.base_url}/seen")).json()
        assert all(token not in str(entry) for entry in seen)
        assert all("authorization" not in entry for entry in seen)
    finally:
        sink.kill()
        if server is not None:
            server.kill()
