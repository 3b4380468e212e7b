"""``mcp-call URL login`` and the reuse of its token by later commands.

The login runs the OAuth authorization code flow with a loopback redirect listener on
127.0.0.1 (a fixed port by default, so the client registration stored with the token
keeps matching) and opens the browser, printing the URL when it cannot. Tokens go to a
file readable only by the user (see ``mcp_resilient.auth.default_token_path``); later
commands for the same URL find them there and refresh them as needed.

Everything OAuth is imported lazily: without the ``auth`` extra, or without a stored
token, other commands never load it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._args import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Options
from ._output import Output

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_LOGIN_PORT", "run_login", "stored_auth", "token_path", "unauthorized_hint"]

DEFAULT_LOGIN_PORT = 33418
"""The loopback port the browser is sent back to (``--port`` changes it)."""


def token_path() -> Path:
    """The token file (``$MCP_CALL_TOKEN_FILE`` overrides the default location)."""
    configured = os.environ.get("MCP_CALL_TOKEN_FILE")
    if configured:
        return Path(configured)
    if os.name == "nt":  # pragma: no cover - not tested here
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mcp-resilient" / "tokens.json"


def _resource(options: Options) -> str:
    from ..auth._discovery import canonical_resource

    return canonical_resource(options.urls[0])


def _has_token(path: Path, url: str) -> bool:
    """Cheap check (no OAuth import): is a token stored for this URL?"""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and f"token:{url}" in data


def stored_auth(options: Options) -> httpx.Auth | None:
    """The OAuth of an earlier ``login`` for these URLs, or None (then no auth is used)."""
    if any(name.lower() == "authorization" for name in options.headers):
        return None  # an explicit -H 'Authorization: ...' wins
    path = token_path()
    if not path.is_file():
        return None
    try:
        from ..auth import FileTokenStorage, OAuth
    except ImportError:  # the auth extra is not installed: nothing to reuse
        return None
    resource = _resource(options)
    if not _has_token(path, resource):
        return None
    return OAuth(storage=FileTokenStorage(path), resource=resource, client_name="mcp-call")


async def run_login(options: Options, out: Output, client_kwargs: dict[str, Any]) -> int:
    """Log in to ``options.urls[0]`` in the browser; store the token for later commands."""
    try:
        from ..auth import (
            AuthError,
            FileTokenStorage,
            LoopbackHandler,
            OAuth,
            open_browser,
        )
    except ImportError:
        out.error("login needs the auth extra: pip install 'mcp-resilient[auth]'")
        return EXIT_USAGE
    from .. import MCPError, ResilientClient

    chosen = options.arguments.get("port")
    port = DEFAULT_LOGIN_PORT if chosen is None else int(chosen)  # 0: a random free port
    path = token_path()
    storage = FileTokenStorage(path)
    resource = _resource(options)

    def show(url: str) -> None:
        # The URL is printed once: by open_browser when no browser opens, else here.
        if open_browser(url, out.note):
            out.note(f"log in in your browser; if it did not open, visit:\n{url}")

    handler = LoopbackHandler(port=port, open_url=show)
    auth = OAuth(
        handler=handler,
        storage=storage,
        resource=resource,
        client_name="mcp-call",
        callback_timeout=options.timeout or 300.0,
    )
    # A fresh login: forget a stored token so the server's challenge starts the flow.
    await storage.delete(f"token:{resource}")
    kwargs = dict(client_kwargs)
    kwargs["timeout"] = max(float(kwargs.get("timeout") or 0), auth.callback_timeout + 60)
    try:
        async with ResilientClient(options.urls, auth=auth, **kwargs):
            pass
    except AuthError as exc:
        out.error(f"login failed: {exc}")
        return EXIT_FAILED
    except MCPError as exc:
        out.error(f"login failed: {exc}")
        return EXIT_FAILED
    finally:
        await handler.aclose()
    token = await storage.load(f"token:{resource}")
    if token is None:
        out.note(f"{resource} did not ask for a login (no token needed); nothing stored")
        return EXIT_OK
    if options.json:
        out.document({"logged_in": resource, "token_file": str(path)})
    else:
        out.result(f"logged in to {resource}; the token is stored in {path}")
    return EXIT_OK


_PROBE_TIMEOUT = 3.0
_PROBE_CAP = 64 * 1024


async def _advertises_oauth(url: str) -> bool:
    """Does the server publish protected resource metadata (RFC 9728)? A short, bounded probe."""
    import anyio
    import httpx

    from .._transports._bounded import ACCEPT_ENCODING, BodyError, read_bounded

    parts = url.split("://", 1)
    if len(parts) != 2:
        return False
    base, _, path = parts[1].partition("/")
    root = f"{parts[0]}://{base}/.well-known/oauth-protected-resource"
    candidates = [f"{root}/{path.strip('/')}", root] if path.strip("/") else [root]
    try:
        with anyio.move_on_after(_PROBE_TIMEOUT):
            async with httpx.AsyncClient(follow_redirects=False, timeout=_PROBE_TIMEOUT) as http:
                for candidate in candidates:
                    request = http.build_request(
                        "GET", candidate, headers={"Accept-Encoding": ACCEPT_ENCODING}
                    )
                    response = await http.send(request, stream=True)
                    body = await read_bounded(response, _PROBE_CAP)
                    if response.status_code != 200:
                        continue
                    try:
                        data = json.loads(body)
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(data, dict) and data.get("authorization_servers"):
                        return True
    except (httpx.HTTPError, BodyError):
        return False
    return False


async def unauthorized_hint(options: Options) -> str:
    """What to do about a 401: log in when the server advertises OAuth, else pass a token."""
    url = options.urls[0]
    passed = any(name.lower() == "authorization" for name in options.headers)
    if await _advertises_oauth(url):
        if passed:
            return (
                "the server refused the token passed with -H; it uses OAuth: drop -H and"
                f" log in with 'mcp-call {url} login'"
            )
        return f"the server uses OAuth: log in first with 'mcp-call {url} login'"
    if passed:
        return "the server refused the credentials passed with -H: check the token"
    return "pass credentials with -H 'Authorization: Bearer TOKEN'"
