"""docs/auth.md "OAuth for your own server", end to end: the very file the page shows.

The recipe (``examples/oauth_server.py``) runs in its own process; ``mcp-call URL login``
logs in through the loopback listener (the browser step automated as in the other
integration tests), then a call carries the token and the kit's principal comes back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from examples._launch import REPO_ROOT, ServerProcess, free_port
from mcp_resilient import ResilientClient
from mcp_resilient.auth import AuthorizationRequiredError, FileTokenStorage, OAuth
from mcp_resilient.cli import main

from .test_oauth_integration import Browser

pytestmark = pytest.mark.integration

RECIPE = REPO_ROOT / "examples" / "oauth_server.py"
PAGE = REPO_ROOT / "docs" / "auth.md"


def test_the_page_shows_the_recipe_file_verbatim() -> None:
    page = PAGE.read_text()
    section = page.split("## OAuth for your own server", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks and blocks[0] == RECIPE.read_text()


@pytest.fixture
def recipe(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        instance="oauth-recipe",
        module="examples.oauth_server",
        extra_args=["--state-db", str(tmp_path / "notes.db")],
    ).start_healthy(30)
    try:
        yield server
    finally:
        server.kill()


def test_recipe_login_then_call(
    recipe: ServerProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = recipe.url
    token_file = tmp_path / "tokens.json"
    monkeypatch.setenv("MCP_CALL_TOKEN_FILE", str(token_file))
    browser = Browser()

    def fake_open(address: str, *args: object, **kwargs: object) -> bool:
        browser(address)
        return True

    monkeypatch.setattr("webbrowser.open", fake_open)

    # Before the login: a 401, and the CLI says how to log in.
    assert main([url, "call", "whoami", "--timeout", "20"]) == 4
    assert f"mcp-call {url} login" in capsys.readouterr().err

    assert main([url, "login", "--port", str(free_port()), "--timeout", "30"]) == 0
    assert browser.errors == [] and len(browser.visits) == 1
    capsys.readouterr()

    assert main([url, "call", "whoami", "--json"]) == 0
    principal = json.dumps(json.loads(capsys.readouterr().out))
    assert "principal:" in principal  # the kit's principal, bound to the token

    # The library, with the token the CLI stored: a call, and the same principal.
    async def call() -> tuple[str, str]:
        auth = OAuth(storage=FileTokenStorage(token_file), resource=url)
        with anyio.fail_after(60):
            async with ResilientClient(url, auth=auth) as client:
                added = await client.call_tool("add", {"a": 2, "b": 3})
                who = await client.call_tool("whoami", {})
        return json.dumps(added.model_dump()), json.dumps(who.model_dump())

    added, who = anyio.run(call)
    assert '"5"' in added or ": 5" in added
    assert "principal:" in who and who.split("principal:")[1][:20] in principal
    assert len(browser.visits) == 1  # no second login


def test_recipe_without_login_is_authorization_required(recipe: ServerProcess) -> None:
    async def call() -> None:
        with anyio.fail_after(60):
            async with ResilientClient(recipe.url, auth=OAuth()) as client:
                await client.list_tools()

    with pytest.raises(AuthorizationRequiredError, match="login"):
        anyio.run(call)
