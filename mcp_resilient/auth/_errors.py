"""The kinds of ``AuthError``; each message names what to fix."""

from __future__ import annotations

from ..errors import AuthError

__all__ = [
    "AuthError",
    "AuthRetryLimitError",
    "AuthorizationError",
    "AuthorizationRequiredError",
    "AuthorizationServerChangedError",
    "DiscoveryError",
    "IssuerMismatchError",
    "PKCEUnsupportedError",
    "RegistrationError",
    "ResourceMismatchError",
    "ResourceOriginError",
    "TokenEndpointError",
]


class DiscoveryError(AuthError):
    """Protected resource or authorization server metadata is missing or malformed."""


class IssuerMismatchError(DiscoveryError):
    """An issuer (metadata ``issuer`` or the redirect's ``iss``) is not the expected one."""


class ResourceMismatchError(DiscoveryError):
    """The protected resource metadata names a resource other than the server we talk to."""


class PKCEUnsupportedError(DiscoveryError):
    """The authorization server's metadata does not offer PKCE with S256: no login is started."""


class AuthorizationServerChangedError(AuthError):
    """The resource names another authorization server than the one this client's
    credentials (pre-registered client, stored tokens) belong to; they are not sent there."""


class ResourceOriginError(AuthError):
    """This ``OAuth`` object holds tokens for one resource; a request went to another origin."""


class RegistrationError(AuthError):
    """No client identity: registration failed or the server offers none we can use."""


class AuthorizationError(AuthError):
    """The interactive step failed: denied, wrong state, no answer in time."""


class AuthorizationRequiredError(AuthorizationError):
    """The server needs a login and this client has no way to run one (no callback)."""


class TokenEndpointError(AuthError):
    """The token endpoint refused the request or answered something that is not a token."""

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        status_code: int | None = None,
        endpoint: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.error = error
        self.status_code = status_code
        super().__init__(message, endpoint=endpoint, hint=hint)


class AuthRetryLimitError(AuthError):
    """The server kept refusing fresh credentials (401/403 again and again); we stopped."""
