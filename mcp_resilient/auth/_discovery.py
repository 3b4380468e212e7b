"""The MCP-specific discovery: challenge parsing, metadata URLs, resource checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Challenge",
    "as_metadata_urls",
    "canonical_resource",
    "origin",
    "parse_challenge",
    "prm_urls",
    "resource_allowed",
    "same_origin",
]

_PARAM = re.compile(r'([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    """What a 401/403 ``WWW-Authenticate`` header tells us."""

    scheme: str = ""
    resource_metadata: str | None = None
    scope: str | None = None
    error: str | None = None
    error_description: str | None = None
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str | None) -> Challenge:
    """Parse a ``Bearer`` (or ``DPoP``) challenge; unknown or broken input gives an empty one."""
    if not header:
        return Challenge()
    scheme = header.strip().split(None, 1)[0] if header.strip() else ""
    params: dict[str, str] = {}
    for match in _PARAM.finditer(header):
        key = match.group(1).lower()
        quoted = match.group(2)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group(3)
        params.setdefault(key, value)
    return Challenge(
        scheme=scheme if "=" not in scheme else "",
        resource_metadata=params.get("resource_metadata"),
        scope=params.get("scope") or None,
        error=params.get("error"),
        error_description=params.get("error_description"),
        params=params,
    )


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased as origins compare."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


def canonical_resource(url: str) -> str:
    """The canonical server URI (RFC 8707 / MCP): no fragment, no query, no trailing slash."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))


def prm_urls(server_url: str) -> list[str]:
    """Protected resource metadata locations (RFC 9728): path-aware first, then the root."""
    parts = urlsplit(server_url)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = []
    if path:
        urls.append(f"{base}/.well-known/oauth-protected-resource{path}")
    urls.append(f"{base}/.well-known/oauth-protected-resource")
    return urls


def as_metadata_urls(issuer: str) -> list[str]:
    """Authorization server metadata locations for an issuer, in the spec's order.

    With a path: RFC 8414 path insertion, OpenID path insertion, OpenID path appending.
    Without: RFC 8414, then OpenID discovery.
    """
    parts = urlsplit(issuer)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if path:
        return [
            f"{base}/.well-known/oauth-authorization-server{path}",
            f"{base}/.well-known/openid-configuration{path}",
            f"{base}{path}/.well-known/openid-configuration",
        ]
    return [
        f"{base}/.well-known/oauth-authorization-server",
        f"{base}/.well-known/openid-configuration",
    ]


def resource_allowed(published: str, server_url: str) -> bool:
    """May tokens for ``published`` (the PRM ``resource``) be used at ``server_url``?

    Same origin, and the server's path is the resource's path or below it.
    """
    if not same_origin(published, server_url):
        return False
    want = urlsplit(published).path.rstrip("/")
    have = urlsplit(server_url).path.rstrip("/")
    return have == want or have.startswith(want + "/") or want == ""


def issuers_match(expected: str, found: Any) -> bool:
    """Metadata ``issuer`` check (RFC 8414 §3.3), tolerant only of a trailing slash."""
    return isinstance(found, str) and found.rstrip("/") == expected.rstrip("/")
