"""OAuth for protected MCP servers (the ``auth`` extra: ``pip install mcp-resilient[auth]``).

``OAuth`` is an ``httpx.Auth``: pass it as ``ResilientClient(url, auth=OAuth(...))``.
It implements the MCP authorization spec (2025-03-26 to 2026-07-28): discovery from the
401 challenge, client registration (pre-registered, metadata document, dynamic), the
authorization code grant with PKCE, client credentials, refresh, and scope step-up.
"""

from __future__ import annotations

from ._errors import (
    AuthError,
    AuthorizationError,
    AuthorizationRequiredError,
    AuthorizationServerChangedError,
    AuthRetryLimitError,
    DiscoveryError,
    IssuerMismatchError,
    PKCEUnsupportedError,
    RegistrationError,
    ResourceMismatchError,
    ResourceOriginError,
    TokenEndpointError,
)
from ._loopback import LoopbackHandler, open_browser
from ._oauth import AssertionRequest, AuthorizationHandler, Grant, IdJagAssertion, OAuth
from ._storage import FileTokenStorage, InMemoryTokenStorage, TokenStorage, default_token_path

__all__ = [
    "AssertionRequest",
    "AuthError",
    "AuthRetryLimitError",
    "AuthorizationError",
    "AuthorizationHandler",
    "AuthorizationRequiredError",
    "AuthorizationServerChangedError",
    "DiscoveryError",
    "FileTokenStorage",
    "Grant",
    "IdJagAssertion",
    "InMemoryTokenStorage",
    "IssuerMismatchError",
    "LoopbackHandler",
    "OAuth",
    "PKCEUnsupportedError",
    "RegistrationError",
    "ResourceMismatchError",
    "ResourceOriginError",
    "TokenEndpointError",
    "TokenStorage",
    "default_token_path",
    "open_browser",
]
