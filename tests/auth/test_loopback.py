"""The loopback redirect listener and the browser opener."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

from mcp_resilient.auth import AuthorizationError, LoopbackHandler, OAuth, open_browser

pytestmark = pytest.mark.anyio


async def test_listener_returns_the_redirect_parameters() -> None:
    opened: list[str] = []
    handler = LoopbackHandler(open_url=opened.append)
    assert handler.redirect_uri.startswith("http://127.0.0.1:")
    await handler.redirect("http://as.test/authorize?x=1")
    assert opened == ["http://as.test/authorize?x=1"]

    async def browser() -> None:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{handler.redirect_uri}?code=abc&state=s1&iss=x")
            assert response.status_code == 200 and b"Login complete" in response.content

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(browser)
            params = await handler.callback()
    assert params == {"code": "abc", "state": "s1", "iss": "x"}
    with pytest.raises(httpx.ConnectError):  # the listener is gone after the callback
        async with httpx.AsyncClient() as http:
            await http.get(handler.redirect_uri)


async def test_busy_port_is_a_typed_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        handler = LoopbackHandler(port=busy.getsockname()[1], open_url=lambda url: None)
        with pytest.raises(AuthorizationError, match="pick another one"):
            await handler.redirect("http://as.test/authorize")


def test_browser_opener_prints_the_url_when_it_cannot_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("webbrowser.open", lambda *a, **k: False)
    shown: list[str] = []
    assert open_browser("http://as.test/authorize?a=1", shown.append) is False
    assert shown and "http://as.test/authorize?a=1" in shown[0]


def test_blocking_clients_are_refused() -> None:
    with httpx.Client() as http, pytest.raises(RuntimeError, match="AsyncClient only"):
        http.get("http://127.0.0.1:9/", auth=OAuth())
