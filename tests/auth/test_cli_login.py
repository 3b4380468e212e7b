"""``mcp-call URL login`` against the real OAuth rig, then a command that reuses the token."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from examples._launch import ServerProcess, free_port
from mcp_resilient.cli import main

from .test_oauth_integration import Browser, auth_server, keys, replicas

__all__ = ["auth_server", "keys", "replicas"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.integration


def test_login_then_call_reuses_the_token(
    replicas: list[ServerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = replicas[0].url
    token_file = tmp_path / "config" / "tokens.json"
    monkeypatch.setenv("MCP_CALL_TOKEN_FILE", str(token_file))
    browser = Browser()

    def fake_open(address: str, *args: object, **kwargs: object) -> bool:
        browser(address)
        return True

    monkeypatch.setattr("webbrowser.open", fake_open)

    # Before the login: a plain 401, and nothing stored.
    assert main([url, "call", "add", "a=2", "b=3", "--timeout", "20"]) == 4
    assert "401" in capsys.readouterr().err

    assert main([url, "login", "--port", str(free_port()), "--timeout", "30"]) == 0
    captured = capsys.readouterr()
    assert browser.errors == [] and len(browser.visits) == 1
    assert f"logged in to {url}" in captured.out
    assert "visit:" in captured.err  # the URL is printed too (for a browser elsewhere)
    assert captured.err.count("response_type=code") == 1  # once, not twice
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert f"token:{url}" in json.loads(token_file.read_text())

    assert main([url, "call", "add", "a=2", "b=3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "5" in json.dumps(result)
    assert len(browser.visits) == 1  # no second login


def test_login_when_no_browser_prints_the_url(
    replicas: list[ServerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MCP_CALL_TOKEN_FILE", str(tmp_path / "tokens.json"))
    monkeypatch.setattr("webbrowser.open", lambda *a, **k: False)
    # Nobody completes the login: a bounded wait, a typed failure, the URL on stderr.
    code = main([replicas[0].url, "login", "--port", str(free_port()), "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 4
    assert "Open this URL in a browser to log in" in err
    assert err.count("response_type=code") == 1  # the URL is printed once, not twice
    assert "no answer from the login" in err
