"""``OAuth``: an ``httpx.Auth`` that implements the MCP authorization spec.

authlib does the OAuth mechanics (PKCE, client authentication, JWT assertions, token
request bodies). This module does only the MCP parts: reacting to 401/403 challenges,
discovery and its checks, choosing scopes and a client identity, and keeping tokens fresh.

Metadata, registration and token requests go through a separate HTTP client that never
follows redirects and never carries the access token; client credentials go only to the
authorization server's token endpoint.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio
import httpx
from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.auth import ClientAuth  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request  # type: ignore[import-untyped]
from authlib.oauth2.rfc7523 import PrivateKeyJWT  # type: ignore[import-untyped]
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]

from .._transports._bounded import ACCEPT_ENCODING, BodyError, read_bounded
from ._discovery import (
    Challenge,
    as_metadata_urls,
    canonical_resource,
    issuers_match,
    origin,
    parse_challenge,
    prm_urls,
    resource_allowed,
)
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
from ._storage import InMemoryTokenStorage, TokenStorage

logger = logging.getLogger("mcp_resilient.auth")

__all__ = ["AssertionRequest", "AuthorizationHandler", "Grant", "IdJagAssertion", "OAuth"]

Grant = Literal["authorization_code", "client_credentials", "jwt_bearer"]
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_MAX_BODY = 1_000_000  # any auth-side body, after decompression
_QUOTE = 80  # at most this much of a server-chosen value goes into an error message


def _short(value: object) -> str:
    """A server-chosen value for an error message: quoted, and cut short."""
    text = str(value)
    return repr(text[:_QUOTE] + ("..." if len(text) > _QUOTE else ""))


def _json(response: httpx.Response) -> Any:
    """The body as JSON, or None (hostile nesting included, which json turns into RecursionError)."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


async def _send_bounded(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One request whose answer is read by us: decompressed in bounded pieces, capped at
    ``_MAX_BODY``. The result is a plain, fully read ``httpx.Response``."""
    headers = httpx.Headers(kwargs.pop("headers", None))
    headers["Accept-Encoding"] = ACCEPT_ENCODING
    request = client.build_request(method, url, headers=headers, **kwargs)
    response = await client.send(request, stream=True, follow_redirects=False)
    body = await read_bounded(response, _MAX_BODY)
    kept = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(response.status_code, headers=kept, content=body, request=request)


async def _drop_body(response: httpx.Response) -> None:
    """Before an auth flow's retry httpx reads the challenged response whole, decompressing
    it without any cap; only its headers matter to us, so its body is dropped unread."""
    stream = response.stream
    response.stream = httpx.ByteStream(b"")
    if "content-encoding" in response.headers:
        del response.headers["content-encoding"]
    if isinstance(stream, httpx.AsyncByteStream):
        await stream.aclose()


class AuthorizationHandler(Protocol):
    """The interactive step: show the user the authorization URL, then hand back the redirect.

    ``redirect`` opens (or prints) the URL; ``callback`` waits for the authorization server
    to redirect to ``redirect_uri`` and returns that redirect's query parameters
    (``code``, ``state``, ``iss``, or ``error``...).
    """

    redirect_uri: str

    async def redirect(self, authorization_url: str) -> None: ...

    async def callback(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class AssertionRequest:
    """What an assertion provider (``jwt_bearer`` grant) may need to make its assertion."""

    issuer: str
    token_endpoint: str
    resource: str | None
    scope: str | None


AssertionProvider = Callable[[AssertionRequest], Awaitable[str]]


@dataclass
class _Context:
    """What discovery found for one protected resource."""

    server_url: str
    resource: str | None
    resource_scopes: list[str] | None
    issuer: str
    metadata: dict[str, Any]
    legacy: bool
    metadata_found: bool = True  # False: no AS metadata, the 2025-03-26 default endpoints

    @property
    def token_endpoint(self) -> str:
        return str(self.metadata["token_endpoint"])


def _split(scope: str | None) -> list[str]:
    return [s for s in (scope or "").split(" ") if s]


def _union(*parts: Sequence[str] | None) -> list[str]:
    seen: dict[str, None] = {}
    for part in parts:
        for item in part or ():
            seen.setdefault(item, None)
    return list(seen)


class OAuth(httpx.Auth):
    """OAuth 2.1 for MCP servers, as the MCP authorization spec describes it.

    Pass it as ``ResilientClient(url, auth=OAuth(...))``. It does nothing until a server
    answers 401; then it discovers the authorization server, gets a token and retries.

    Args:
        handler: The interactive step (``LoopbackHandler()`` or your own); needed for the
            ``authorization_code`` grant unless a token is already stored.
        grant: ``"authorization_code"`` (a user logs in), ``"client_credentials"``
            (machine to machine) or ``"jwt_bearer"`` (an assertion, e.g. workload identity).
        client_id: A pre-registered client ID. Without it the client uses a client ID
            metadata document (``client_metadata_url``) or registers itself.
        client_secret: The pre-registered client's secret, if it has one.
        token_endpoint_auth_method: Force ``client_secret_basic``, ``client_secret_post``,
            ``none`` or ``private_key_jwt``; by default chosen from the server's metadata.
        private_key: For ``private_key_jwt``: the client's private key (PEM or JWK).
        signing_algorithm: For ``private_key_jwt``: the JWS algorithm (``ES256``...).
        assertion: For ``jwt_bearer``: the JWT, or an async function making one.
        client_metadata_url: An https URL of this client's metadata document (CIMD).
        client_name: Sent when registering dynamically.
        application_type: Sent when registering dynamically (``native`` or ``web``).
        issuer: The authorization server the pre-registered credentials belong to. Without
            it they are pinned to the first issuer seen; another issuer never gets them.
        scope: Always ask for exactly these scopes (default: the server's challenge, else
            the resource's ``scopes_supported``, else none).
        offline_access: Ask for ``offline_access`` (a refresh token) when the server offers it.
        resource: The resource's canonical URI, when it differs from the endpoint URL
            (several replicas behind one resource identifier).
        storage: Where tokens and registrations live (default: memory only).
        max_step_up: How many times one request may re-authorize for more scopes (403),
            and how many interactive step-up logins one ``OAuth`` runs per ``step_up_window``.
        step_up_window: The window (seconds) of that per-client limit on step-up logins.
        refresh_margin: Refresh this many seconds before the token expires.
        callback_timeout: How long to wait for the user to finish the login.
        http_timeout: Bound on each metadata, registration or token request.
        http_client: The client for those requests (default: a private one, no redirects).
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        *,
        handler: AuthorizationHandler | None = None,
        grant: Grant = "authorization_code",
        client_id: str | None = None,
        client_secret: str | None = None,
        token_endpoint_auth_method: str | None = None,
        private_key: str | Mapping[str, Any] | None = None,
        signing_algorithm: str = "ES256",
        assertion: str | AssertionProvider | None = None,
        client_metadata_url: str | None = None,
        client_name: str = "mcp-resilient",
        application_type: Literal["native", "web"] = "native",
        scope: str | Sequence[str] | None = None,
        offline_access: bool = True,
        resource: str | None = None,
        issuer: str | None = None,
        storage: TokenStorage | None = None,
        max_step_up: int = 2,
        step_up_window: float = 600.0,
        refresh_margin: float = 30.0,
        callback_timeout: float = 300.0,
        http_timeout: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if grant == "client_credentials" and not client_id:
            raise ValueError("grant='client_credentials' needs client_id (and a secret or key)")
        if grant == "jwt_bearer" and assertion is None:
            raise ValueError("grant='jwt_bearer' needs assertion= (a JWT or a provider)")
        if private_key is not None and token_endpoint_auth_method is None:
            token_endpoint_auth_method = "private_key_jwt"
        if client_metadata_url is not None and not client_metadata_url.startswith("https://"):
            raise ValueError("client_metadata_url must be an https:// URL with a path")
        self.handler = handler
        self.grant: Grant = grant
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_endpoint_auth_method = token_endpoint_auth_method
        self.private_key = private_key
        self.signing_algorithm = signing_algorithm
        self.assertion = assertion
        self.client_metadata_url = client_metadata_url
        self.client_name = client_name
        self.application_type = application_type
        self.scope = _split(scope) if isinstance(scope, str) else list(scope or []) or None
        self.offline_access = offline_access
        self.resource = canonical_resource(resource) if resource else None
        self.storage: TokenStorage = storage or InMemoryTokenStorage()
        self.issuer = issuer
        self.max_step_up = max_step_up
        self.step_up_window = step_up_window
        self._step_up_logins: list[float] = []  # when each interactive step-up login started
        self.refresh_margin = refresh_margin
        self.callback_timeout = callback_timeout
        self.http_timeout = http_timeout
        self._http = http_client
        self._lock = anyio.Lock()
        self._server_url: str | None = None
        self._context: _Context | None = None
        self._token: dict[str, Any] | None = None
        self._loaded = False
        self._requested: list[str] | None = None
        self._pinned: str | None = issuer  # the issuer pre-registered credentials belong to
        self._origins: set[str] = set()  # origins proven to serve our resource

    # -- the httpx.Auth flow -------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError(
            "OAuth works with httpx.AsyncClient only (ResilientClient uses one);"
            " a blocking httpx.Client would send requests without credentials"
        )
        yield request  # pragma: no cover - makes this a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        url = str(request.url.copy_with(query=None, fragment=None))
        self._check_origin(url)
        token = await self._usable_token() if origin(url) in self._origins else None
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        on_401 = 0
        step_ups = 0
        how = "stored"
        while response.status_code in (401, 403):
            challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
            if response.status_code == 403:
                if challenge.error != "insufficient_scope":
                    return  # a refusal that more scopes cannot fix: the caller sees the 403
                if step_ups >= self.max_step_up:
                    raise AuthRetryLimitError(
                        f"the server still answers 403 insufficient_scope after {step_ups}"
                        f" re-authorizations (scope {_short(challenge.scope)})",
                        endpoint=url,
                        hint="The account or client is not allowed that scope; ask the server's"
                        " operator to grant it",
                    )
                step_ups += 1
                self._count_step_up_login(url, challenge)
                await _drop_body(response)
                token, how = await self._acquire(url, challenge, token, step_up=True, attempt=1)
            else:
                on_401 += 1
                # A token we were just issued is refused: asking again will not help.
                if on_401 > 2 or how == "authorized":
                    raise AuthRetryLimitError(
                        "the server rejected a freshly issued access token (401 again)",
                        endpoint=url,
                        hint="The server does not accept tokens from its own authorization"
                        " server for this resource: check its audience/resource configuration",
                    )
                await _drop_body(response)
                token, how = await self._acquire(
                    url, challenge, token, step_up=False, attempt=on_401
                )
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request

    def _check_origin(self, url: str) -> None:
        """One ``OAuth`` serves one resource: its tokens never go to another origin."""
        if self._server_url is None:
            self._server_url = canonical_resource(url)
            self._origins.add(origin(self.resource or self._server_url))
        if origin(url) in self._origins or self.resource is not None:
            # With resource=, another origin gets the token only once its resource metadata
            # names that resource (replicas of one resource; see _acquire).
            return
        raise ResourceOriginError(
            f"this OAuth object holds tokens for {origin(self._server_url)}; {origin(url)} is"
            " another origin, and a token never goes to another origin",
            endpoint=url,
            hint="Use one OAuth object per server; for replicas of one resource at several"
            " origins, pass OAuth(resource=<the resource's canonical URI>)",
        )

    def _count_step_up_login(self, url: str, challenge: Challenge) -> None:
        """A step-up that needs an interactive login is limited per client, not per request:
        at most ``max_step_up`` within ``step_up_window`` seconds."""
        if self.grant != "authorization_code":
            return  # no user involved: the per-request limit is enough
        now = time.monotonic()
        recent = [t for t in self._step_up_logins if now - t < self.step_up_window]
        if len(recent) >= self.max_step_up:
            self._step_up_logins = recent
            raise AuthRetryLimitError(
                f"the server asks for more scopes again ({_short(challenge.scope)}), after"
                f" {len(recent)} step-up logins in the last {self.step_up_window:g} s;"
                " not starting another login",
                endpoint=url,
                hint="The account or client is not granted those scopes; ask the server's"
                " operator, or raise OAuth(max_step_up=..., step_up_window=...)",
            )
        recent.append(now)
        self._step_up_logins = recent

    def _holds_credentials(self) -> bool:
        """Pre-registered credentials: they belong to one authorization server."""
        return bool(self.client_id) or isinstance(self.assertion, str)

    def _check_issuer(self, issuer: str, url: str) -> None:
        """Pre-registered credentials go only to the issuer they are pinned to (the one
        configured, else the first seen); another one gets a typed refusal."""
        if not self._holds_credentials():
            return
        pinned = self._pinned or (self._token or {}).get("issuer")
        if not isinstance(pinned, str):
            self._pinned = issuer
            return
        if issuers_match(pinned, issuer):
            return
        raise AuthorizationServerChangedError(
            f"the resource moved to another authorization server: it now names"
            f" {_short(issuer)}, but this client's credentials belong to {pinned!r};"
            " they were not sent there",
            endpoint=url,
            hint="If the move is genuine, register the client at the new authorization server"
            " and pass its client_id (and OAuth(issuer=...)); otherwise do not trust this server",
        )

    # -- tokens ---------------------------------------------------------------------------

    def _key(self) -> str:
        return f"token:{self.resource or self._server_url}"

    async def _load(self) -> None:
        if not self._loaded:
            self._token = await self.storage.load(self._key())
            self._loaded = True

    def _expiring(self, token: Mapping[str, Any]) -> bool:
        expires_at = token.get("expires_at")
        return isinstance(expires_at, (int, float)) and expires_at - time.time() <= (
            self.refresh_margin
        )

    async def _usable_token(self) -> str | None:
        """The access token to send, refreshed first when it is about to expire."""
        if not self._loaded:
            async with self._lock:
                await self._load()
        token = self._token
        if token is None or not self._expiring(token):
            return token["access_token"] if token else None
        async with self._lock:
            token = self._token
            if token is not None and self._expiring(token):
                if token.get("refresh_token"):
                    try:
                        await self._refresh(token)
                    except TokenEndpointError as exc:
                        logger.info("refresh before expiry failed (%s); will re-authorize", exc)
                        await self._forget_token()
                else:
                    await self._forget_token()
            return self._token["access_token"] if self._token else None

    async def _forget_token(self) -> None:
        self._token = None
        await self.storage.delete(self._key())

    async def _store_token(self, data: dict[str, Any], context: _Context) -> str:
        previous = self._token or {}
        token = {
            "access_token": data["access_token"],
            "token_type": data.get("token_type", "Bearer"),
            "refresh_token": data.get("refresh_token") or previous.get("refresh_token"),
            "scope": data.get("scope"),
            "expires_at": (
                time.time() + float(data["expires_in"])
                if isinstance(data.get("expires_in"), (int, float))
                else None
            ),
            "issuer": context.issuer,
            "token_endpoint": context.token_endpoint,
            "resource": context.resource,
        }
        if previous.get("issuer") not in (None, context.issuer):
            token["refresh_token"] = data.get("refresh_token")
        self._token = token
        await self.storage.save(self._key(), token)
        return str(token["access_token"])

    async def _acquire(
        self, url: str, challenge: Challenge, used: str | None, *, step_up: bool, attempt: int
    ) -> tuple[str, str]:
        """A new token after a 401/403, and how it came: ``shared``, ``refreshed`` or
        ``authorized``. One caller at a time; the others reuse its work."""
        async with self._lock:
            await self._load()
            current = self._token["access_token"] if self._token else None
            known = origin(url) in self._origins
            if known and current is not None and current != used and not step_up:
                return str(current), "shared"  # another call already got a fresh token
            context = await self._discover(url, challenge)
            if not known:
                if context.legacy:
                    raise ResourceOriginError(
                        f"{origin(url)} publishes no resource metadata, so nothing shows it"
                        f" serves {self.resource}; its tokens are not sent there",
                        endpoint=url,
                        hint="Use one OAuth object per server",
                    )
                self._origins.add(origin(url))  # its metadata names our resource
                if current is not None and current != used and not step_up:
                    return str(current), "shared"
            token = self._token
            if (
                not step_up
                and attempt == 1
                and token is not None
                and token.get("refresh_token")
                and token.get("issuer") == context.issuer
            ):
                try:
                    return await self._refresh(token, context), "refreshed"
                except TokenEndpointError as exc:
                    logger.info("refresh after 401 failed (%s); authorizing again", exc)
            return await self._authorize(context, challenge, step_up=step_up), "authorized"

    # -- discovery ------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        return self._http or httpx.AsyncClient(
            follow_redirects=False, timeout=httpx.Timeout(self.http_timeout)
        )

    async def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        error: type[AuthError] = DiscoveryError,
        **kwargs: Any,
    ) -> httpx.Response:
        """One bounded request to the authorization side; failures become ``error``."""
        client = self._client()
        try:
            with anyio.fail_after(self.http_timeout):
                return await _send_bounded(client, method, url, **kwargs)
        except BodyError as exc:
            raise error(
                f"{what} at {url} was not read: {exc}",
                endpoint=url,
                hint="The server sent an oversized or malformed answer; check the server",
            ) from exc
        except TimeoutError:
            raise error(
                f"{what} at {url} did not answer within {self.http_timeout:g} s",
                endpoint=url,
                hint="Check that the authorization server is up and reachable",
            ) from None
        except httpx.HTTPError as exc:
            raise error(
                f"{what} at {url} failed ({exc.__class__.__name__}: {exc or 'no detail'})",
                endpoint=url,
                hint="Check that the authorization server is up and reachable",
            ) from exc
        finally:
            if self._http is None:
                await client.aclose()

    async def _get_metadata(self, url: str, what: str) -> dict[str, Any] | None:
        """A metadata document, or None when it is not there (4xx/5xx/redirect)."""
        try:
            response = await self._request(
                "GET", url, what=what, headers={"Accept": "application/json"}
            )
        except DiscoveryError as exc:
            if isinstance(exc.__cause__, BodyError):
                raise  # there, but refused (too large): not the same as missing
            logger.debug("%s", exc)
            return None
        if response.status_code != 200:
            logger.debug("%s at %s: HTTP %s", what, url, response.status_code)
            return None
        data = _json(response)
        if not isinstance(data, dict):
            kind = response.headers.get("content-type", "no content type")
            raise DiscoveryError(
                f"{what} at {url} is not a JSON object ({kind})",
                endpoint=url,
                hint="The server publishes malformed metadata; fix the document at that URL",
            )
        return data

    async def _discover(self, url: str, challenge: Challenge) -> _Context:
        server_url = self.resource or canonical_resource(url)
        prm: dict[str, Any] | None = None
        candidates = prm_urls(url)
        if challenge.resource_metadata:
            candidates.insert(0, challenge.resource_metadata)
        for candidate in dict.fromkeys(candidates):
            prm = await self._get_metadata(candidate, "protected resource metadata")
            if prm is not None:
                break
        resource: str | None = None
        scopes: list[str] | None = None
        if prm is not None:
            resource = prm.get("resource")
            servers = prm.get("authorization_servers")
            if not isinstance(resource, str) or not resource:
                raise DiscoveryError(
                    "protected resource metadata has no 'resource'",
                    endpoint=url,
                    hint="The server's /.well-known/oauth-protected-resource document is malformed",
                )
            if not resource_allowed(resource, server_url):
                raise ResourceMismatchError(
                    f"protected resource metadata is for {_short(resource)}, not for"
                    f" {server_url!r};"
                    " refusing to get a token for another resource",
                    endpoint=url,
                    hint="Check the endpoint URL, or pass OAuth(resource=...) if the server is"
                    " published under another canonical URI",
                )
            if (
                not isinstance(servers, list)
                or not servers
                or not all(
                    isinstance(s, str) and s.startswith(("http://", "https://")) for s in servers
                )
            ):
                raise DiscoveryError(
                    "protected resource metadata lists no usable 'authorization_servers'",
                    endpoint=url,
                    hint="The server must name its authorization server (RFC 9728)",
                )
            raw_scopes = prm.get("scopes_supported")
            if isinstance(raw_scopes, list):
                scopes = [s for s in raw_scopes if isinstance(s, str)]
            issuer = servers[0]
        else:
            # 2025-03-26 servers: no resource metadata; the server's origin is the issuer.
            issuer = origin(url)
        self._check_issuer(issuer, url)
        metadata, found = await self._as_metadata(issuer, legacy=prm is None)
        context = _Context(
            server_url=server_url,
            resource=resource,
            resource_scopes=scopes,
            issuer=issuer,
            metadata=metadata,
            legacy=prm is None,
            metadata_found=found,
        )
        if self._context is not None and self._context.issuer != issuer:
            logger.info(
                "the resource moved from authorization server %s to %s; registering anew",
                self._context.issuer,
                issuer,
            )
            self._requested = None
        self._context = context
        return context

    async def _as_metadata(self, issuer: str, *, legacy: bool) -> tuple[dict[str, Any], bool]:
        """The issuer's metadata, and whether it was found (else the 2025-03-26 defaults)."""
        for candidate in as_metadata_urls(issuer):
            data = await self._get_metadata(candidate, "authorization server metadata")
            if data is None:
                continue
            if not issuers_match(issuer, data.get("issuer")):
                raise IssuerMismatchError(
                    f"authorization server metadata at {candidate} names issuer"
                    f" {_short(data.get('issuer'))}, expected {issuer!r}; refusing to use it",
                    endpoint=candidate,
                    hint="The metadata may be forged or misconfigured; its 'issuer' must equal"
                    " the authorization server URL",
                )
            for name in ("authorization_endpoint", "token_endpoint"):
                value = data.get(name)
                if name == "authorization_endpoint" and self.grant != "authorization_code":
                    continue
                if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                    raise DiscoveryError(
                        f"authorization server metadata at {candidate} has no valid {name!r}",
                        endpoint=candidate,
                        hint="Fix the authorization server's metadata document",
                    )
            return data, True
        base = origin(issuer)
        logger.info("no authorization server metadata for %s; using default endpoints", issuer)
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "registration_endpoint": f"{base}/register",
        }, False

    # -- scopes and client identity -------------------------------------------------------

    def _scopes(self, context: _Context, challenge: Challenge, *, step_up: bool) -> list[str]:
        if self.scope is not None:
            wanted = list(self.scope)
        elif challenge.scope:
            wanted = _split(challenge.scope)
        else:
            wanted = list(context.resource_scopes or [])
        if step_up:
            wanted = _union(self._requested, wanted)
        supported = context.metadata.get("scopes_supported")
        if (
            self.grant == "authorization_code"
            and self.offline_access
            and isinstance(supported, list)
            and "offline_access" in supported
            and "offline_access" not in wanted
        ):
            wanted.append("offline_access")
        self._requested = [s for s in wanted if s != "offline_access"]
        return wanted

    def _auth_method(self, client: Mapping[str, Any], context: _Context) -> str:
        method = client.get("token_endpoint_auth_method")
        if isinstance(method, str) and method:
            return method
        if not client.get("client_secret"):
            return "none"
        supported = context.metadata.get("token_endpoint_auth_methods_supported")
        if (
            isinstance(supported, list)
            and "client_secret_basic" not in supported
            and "client_secret_post" in supported
        ):
            return "client_secret_post"
        return "client_secret_basic"

    async def _client_identity(self, context: _Context) -> dict[str, Any]:
        self._check_issuer(context.issuer, context.server_url)
        if self.client_id:
            return {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "token_endpoint_auth_method": self.token_endpoint_auth_method,
            }
        key = f"client:{context.issuer}"
        stored = await self.storage.load(key)
        registered_for = (stored or {}).get("redirect_uri")
        current = self.handler.redirect_uri if self.handler is not None else None
        if (
            stored
            and stored.get("client_id")
            and (current is None or registered_for in (None, current))
        ):
            return stored  # (without a handler: a refresh, where the redirect URI plays no part)
        # else: registered for another redirect URI (a random loopback port): anew
        metadata = context.metadata
        if self.client_metadata_url and metadata.get("client_id_metadata_document_supported"):
            return {"client_id": self.client_metadata_url, "token_endpoint_auth_method": "none"}
        endpoint = metadata.get("registration_endpoint")
        if not isinstance(endpoint, str):
            raise RegistrationError(
                f"the authorization server {context.issuer} offers no dynamic client"
                " registration and this client has no client ID",
                hint="Register a client with the server's operator and pass"
                " OAuth(client_id=..., client_secret=...), or client_metadata_url=",
            )
        client = await self._register(endpoint, context)
        await self.storage.save(key, client)
        return client

    async def _register(self, endpoint: str, context: _Context) -> dict[str, Any]:
        supported = context.metadata.get("token_endpoint_auth_methods_supported")
        method = "none"
        if isinstance(supported, list) and supported and "none" not in supported:
            method = next(
                (m for m in ("client_secret_basic", "client_secret_post") if m in supported),
                "client_secret_basic",
            )
        body: dict[str, Any] = {
            "client_name": self.client_name,
            "redirect_uris": [self.handler.redirect_uri] if self.handler else [],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
            "application_type": self.application_type,
        }
        response = await self._request(
            "POST",
            endpoint,
            what="client registration",
            error=RegistrationError,
            json=body,
            headers={"Accept": "application/json"},
        )
        data = _json(response)
        if response.status_code not in (200, 201) or not isinstance(data, dict):
            detail = (
                data.get("error_description") or data.get("error")
                if isinstance(data, dict)
                else response.text
            )
            raise RegistrationError(
                f"dynamic client registration at {endpoint} failed (HTTP"
                f" {response.status_code}: {_short(detail)})",
                endpoint=endpoint,
                hint="Pass a pre-registered OAuth(client_id=...) if the server does not let"
                " clients register themselves",
            )
        if not isinstance(data.get("client_id"), str):
            raise RegistrationError(
                f"client registration at {endpoint} answered without a client_id",
                endpoint=endpoint,
                hint="The authorization server's registration endpoint is broken",
            )
        data.setdefault("token_endpoint_auth_method", method)
        if not data.get("client_secret") and data["token_endpoint_auth_method"] != "none":
            data["token_endpoint_auth_method"] = "none"
        return {
            "client_id": data["client_id"],
            "client_secret": data.get("client_secret"),
            "token_endpoint_auth_method": data["token_endpoint_auth_method"],
            "redirect_uri": self.handler.redirect_uri if self.handler else None,
        }

    # -- grants ---------------------------------------------------------------------------

    async def _authorize(self, context: _Context, challenge: Challenge, *, step_up: bool) -> str:
        if self.grant == "authorization_code":
            self._login_possible(context)
        scopes = self._scopes(context, challenge, step_up=step_up)
        client = await self._client_identity(context)
        scope = " ".join(scopes) or None
        if self.grant == "client_credentials":
            data = await self._token_request(
                context, client, "client_credentials", scope=scope, resource=context.resource
            )
        elif self.grant == "jwt_bearer":
            assert self.assertion is not None
            if isinstance(self.assertion, str):
                assertion = self.assertion
            else:
                assertion = await self.assertion(
                    AssertionRequest(
                        context.issuer, context.token_endpoint, context.resource, scope
                    )
                )
            data = await self._token_request(
                context,
                client,
                JWT_BEARER_GRANT,
                assertion=assertion,
                scope=scope,
                resource=context.resource,
            )
        else:
            data = await self._authorization_code(context, client, scope)
        return await self._store_token(data, context)

    def _login_possible(self, context: _Context) -> AuthorizationHandler:
        """Checked before a client identity is looked for: no login, no registration."""
        handler = self.handler
        if handler is None:
            raise AuthorizationRequiredError(
                f"{context.server_url} needs a login and no stored token is valid",
                endpoint=context.server_url,
                hint=f"Log in first (mcp-call {context.server_url} login), or pass"
                " OAuth(handler=LoopbackHandler())",
            )
        methods = context.metadata.get("code_challenge_methods_supported")
        if context.metadata_found and (not isinstance(methods, list) or "S256" not in methods):
            # MCP authorization: without S256 in the metadata the client MUST refuse. Only
            # a 2025-03-26 server without any metadata is trusted to do PKCE unannounced.
            raise PKCEUnsupportedError(
                f"the authorization server {context.issuer} does not offer PKCE with S256"
                f" (code_challenge_methods_supported: {_short(methods)}); no login started",
                endpoint=context.server_url,
                hint="Ask the server's operator to enable PKCE (S256) and list it in the"
                " authorization server metadata",
            )
        return handler

    async def _authorization_code(
        self, context: _Context, client: Mapping[str, Any], scope: str | None
    ) -> dict[str, Any]:
        handler = self._login_possible(context)
        verifier = generate_token(64)
        state = generate_token(32)
        url = prepare_grant_uri(
            context.metadata["authorization_endpoint"],
            client["client_id"],
            "code",
            redirect_uri=handler.redirect_uri,
            scope=scope,
            state=state,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
            resource=context.resource,
        )
        await handler.redirect(url)
        try:
            with anyio.fail_after(self.callback_timeout):
                result = dict(await handler.callback())
        except TimeoutError:
            raise AuthorizationError(
                f"no answer from the login within {self.callback_timeout:g} s",
                endpoint=context.server_url,
                hint="Finish the login in the browser sooner, or raise callback_timeout",
            ) from None
        if result.get("state") != state:
            raise AuthorizationError(
                "the login's redirect carried the wrong state; possible forgery, discarded",
                endpoint=context.server_url,
                hint="Start the login again from this client",
            )
        # RFC 9207: checked before anything in the response is acted on, errors included.
        self._check_iss(context, result.get("iss"))
        if result.get("error"):
            raise AuthorizationError(
                f"the authorization server refused: {_short(result['error'])}"
                + (
                    f" ({_short(result['error_description'])})"
                    if result.get("error_description")
                    else ""
                ),
                endpoint=context.server_url,
                hint="Check the account, the requested scopes and the client registration",
            )
        code = result.get("code")
        if not code:
            raise AuthorizationError(
                "the login's redirect carried no authorization code",
                endpoint=context.server_url,
                hint="Check the authorization server's redirect configuration",
            )
        return await self._token_request(
            context,
            client,
            "authorization_code",
            code=code,
            redirect_uri=handler.redirect_uri,
            code_verifier=verifier,
            resource=context.resource,
        )

    def _check_iss(self, context: _Context, iss: str | None) -> None:
        """RFC 9207: a present ``iss`` must equal the recorded issuer, character for character."""
        recorded = str(context.metadata.get("issuer", context.issuer))
        if iss is not None:
            if iss != recorded:
                raise IssuerMismatchError(
                    f"the login's redirect came from issuer {_short(iss)}, expected {recorded!r};"
                    " the code was not used",
                    endpoint=context.server_url,
                    hint="Another authorization server answered (mix-up attack?); log in again",
                )
        elif context.metadata.get("authorization_response_iss_parameter_supported") is True:
            raise IssuerMismatchError(
                "the login's redirect has no 'iss' although the authorization server"
                " promises one; the code was not used",
                endpoint=context.server_url,
                hint="Log in again; if it persists, the authorization server is misconfigured",
            )

    async def _refresh(self, token: Mapping[str, Any], context: _Context | None = None) -> str:
        """Refresh at the issuer that issued ``token``, never at another one (discovery may
        have moved on to another authorization server since)."""
        if context is None:
            context = self._context
        if context is not None and not issuers_match(context.issuer, token.get("issuer")):
            context = None
        if context is None:
            metadata = {
                "issuer": token.get("issuer"),
                "token_endpoint": token.get("token_endpoint"),
            }
            if not isinstance(metadata["token_endpoint"], str):
                raise TokenEndpointError("stored token has no token endpoint to refresh at")
            context = _Context(
                server_url=self.resource or self._server_url or "",
                resource=token.get("resource"),
                resource_scopes=None,
                issuer=str(token.get("issuer")),
                metadata=metadata,
                legacy=False,
            )
        client = await self._client_identity(context)
        data = await self._token_request(
            context,
            client,
            "refresh_token",
            refresh_token=token["refresh_token"],
            resource=context.resource,
        )
        logger.info("refreshed the access token for %s", context.server_url)
        return await self._store_token(data, context)

    async def _token_request(
        self, context: _Context, client: Mapping[str, Any], grant_type: str, **params: Any
    ) -> dict[str, Any]:
        endpoint = context.token_endpoint
        redirect_uri = params.pop("redirect_uri", None)
        method = self._auth_method(client, context)
        if method == "client_secret_basic":
            # Also in the body: allowed (RFC 6749 §2.3.1) and some servers insist on it.
            params["client_id"] = client["client_id"]
        body = prepare_token_request(grant_type, redirect_uri=redirect_uri, **params)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        secret: Any = client.get("client_secret")
        auth_method: Any = method
        if method == "private_key_jwt":
            if self.private_key is None:
                raise TokenEndpointError(
                    "the client authenticates with private_key_jwt but has no key",
                    hint="Pass OAuth(private_key=<PEM or JWK>)",
                )
            secret = _signing_key(self.private_key, self.signing_algorithm)
            auth_method = PrivateKeyJWT(
                endpoint, claims={"aud": context.issuer}, alg=self.signing_algorithm
            )
        elif method not in ("client_secret_basic", "client_secret_post", "none"):
            raise TokenEndpointError(
                f"token endpoint auth method {method!r} is not supported",
                hint="Use client_secret_basic, client_secret_post, none or private_key_jwt",
            )
        uri, headers, body = ClientAuth(client["client_id"], secret, auth_method).prepare(
            "POST", endpoint, headers, body
        )
        response = await self._request(
            "POST",
            uri,
            what="token request",
            error=TokenEndpointError,
            content=body,
            headers=headers,
        )
        return _parse_token_response(response, endpoint)


def _signing_key(key: str | Mapping[str, Any], alg: str) -> Any:
    """Import a PEM or JWK private key as the key type ``alg`` needs (authlib wants a key object)."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    kind: Any = ECKey if alg.startswith("ES") else OKPKey if alg == "EdDSA" else RSAKey
    try:
        return kind.import_key(dict(key) if isinstance(key, Mapping) else key)
    except Exception as exc:
        raise TokenEndpointError(
            f"the private key cannot be used for {alg} ({exc.__class__.__name__}: {exc})",
            hint="Pass a PEM or JWK private key that matches signing_algorithm",
        ) from exc


def _parse_token_response(
    response: httpx.Response, endpoint: str, *, bearer_only: bool = True
) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")[:_QUOTE]
    data = _json(response) if len(response.content) <= _MAX_BODY else None
    if response.status_code != 200:
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            error = data["error"]
            detail = data.get("error_description")
            hints = {
                "invalid_client": "Check client_id/client_secret (or the key) and the auth method",
                "invalid_grant": "The code or refresh token is no longer valid; log in again",
                "invalid_scope": "Ask for scopes the authorization server grants",
                "unauthorized_client": "This client may not use this grant; check its registration",
            }
            raise TokenEndpointError(
                f"the token endpoint refused: {_short(error)}"
                + (f" ({_short(detail)})" if detail else ""),
                error=error,
                status_code=response.status_code,
                endpoint=endpoint,
                hint=hints.get(error, "Check the client's registration and the request"),
            )
        raise TokenEndpointError(
            f"the token endpoint answered HTTP {response.status_code}"
            f" ({content_type or 'no content type'}), not an OAuth answer",
            status_code=response.status_code,
            endpoint=endpoint,
            hint="Check the token_endpoint in the authorization server's metadata",
        )
    if not isinstance(data, dict):
        raise TokenEndpointError(
            f"the token endpoint answered {content_type or 'something'} instead of a JSON token",
            status_code=200,
            endpoint=endpoint,
            hint="The token_endpoint URL points at a web page, not the OAuth endpoint;"
            " fix the authorization server's metadata",
        )
    if not isinstance(data.get("access_token"), str) or not data["access_token"]:
        raise TokenEndpointError(
            "the token endpoint's answer has no access_token",
            endpoint=endpoint,
            hint="The authorization server is misconfigured",
        )
    token_type = str(data.get("token_type", "Bearer"))
    if bearer_only and token_type.lower() != "bearer":
        raise TokenEndpointError(
            f"the token endpoint issued a {_short(token_type)} token; only Bearer tokens are"
            " supported",
            endpoint=endpoint,
            hint="Configure the authorization server to issue Bearer tokens (DPoP is not supported)",
        )
    return data


class IdJagAssertion:
    """Enterprise-managed authorization (SEP-990): trade the user's IdP ID token for an ID-JAG.

    Use as ``OAuth(grant="jwt_bearer", assertion=IdJagAssertion(...), client_id=...,
    client_secret=...)``: before each token request it asks the enterprise IdP (RFC 8693
    token exchange) for an identity assertion grant aimed at the MCP server's
    authorization server and resource, which the ``jwt_bearer`` grant then presents.
    """

    def __init__(
        self,
        idp_token_endpoint: str,
        id_token: str,
        *,
        idp_client_id: str | None = None,
        idp_client_secret: str | None = None,
        http_timeout: float = 30.0,
    ) -> None:
        self.idp_token_endpoint = idp_token_endpoint
        self.id_token = id_token
        self.idp_client_id = idp_client_id
        self.idp_client_secret = idp_client_secret
        self.http_timeout = http_timeout

    async def __call__(self, request: AssertionRequest) -> str:
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": self.id_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "audience": request.issuer,
        }
        if request.resource:
            form["resource"] = request.resource
        if request.scope:
            form["scope"] = request.scope
        headers = {"Accept": "application/json"}
        if self.idp_client_id and self.idp_client_secret:
            pair = f"{self.idp_client_id}:{self.idp_client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif self.idp_client_id:
            form["client_id"] = self.idp_client_id
        try:
            async with httpx.AsyncClient(follow_redirects=False) as client:
                with anyio.fail_after(self.http_timeout):
                    response = await _send_bounded(
                        client, "POST", self.idp_token_endpoint, data=form, headers=headers
                    )
        except (TimeoutError, httpx.HTTPError, BodyError) as exc:
            raise TokenEndpointError(
                f"the identity provider's token exchange failed ({exc.__class__.__name__})",
                endpoint=self.idp_token_endpoint,
                hint="Check that the identity provider is reachable",
            ) from exc
        data = _parse_token_response(response, self.idp_token_endpoint, bearer_only=False)
        return str(data["access_token"])
