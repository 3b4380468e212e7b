"""The stateless era (2026-07-28) as the fake checks it: the envelope and header rules.

A stateless request carries its protocol version, client capabilities and client info in
``params._meta`` and mirrors method, name and ``x-mcp-header`` tool parameters into HTTP
headers. A real server rejects any disagreement with ``400`` and a JSON-RPC error; so does
the fake, in the order the official SDK checks them (envelope, headers, version), so a
client sees the same first failure from both.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import mcp_types as mt

__all__ = [
    "CACHEABLE_METHODS",
    "HANDSHAKE_ONLY_METHODS",
    "HEADER_MISMATCH",
    "INVALID_PARAMS",
    "METHOD_NOT_FOUND",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "Refusal",
    "check_envelope",
    "check_param_headers",
    "decode_header_value",
    "http_status_for",
    "unsupported_version",
]

HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601

_NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose ``Mcp-Name`` header mirrors a body parameter, and that parameter."""

HANDSHAKE_ONLY_METHODS = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
"""Methods the 2026-07-28 revision removed: a stateless request for one gets -32601 / 404."""

CACHEABLE_METHODS = frozenset(
    {
        "server/discover",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
    }
)
"""Results that carry ``ttlMs`` and ``cacheScope`` in the stateless era (SEP-2549)."""

_HTTP_STATUS = {
    -32700: 400,
    -32600: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    -32021: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}

_B64_PREFIX = "=?base64?"
_B64_SUFFIX = "?="


def http_status_for(code: int) -> int:
    """The HTTP status a stateless answer with JSON-RPC error ``code`` gets (200 if unmapped).

    The spec asks 404 for an unknown method and 400 for header and version errors; the
    official SDK also answers 400 for parse, request and params errors. The fake does both.
    """
    return _HTTP_STATUS.get(code, 200)


@dataclass(frozen=True)
class Refusal:
    """Why a stateless request was rejected before it ran: a JSON-RPC error."""

    code: int
    message: str
    data: Any = None

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def decode_header_value(value: str | None) -> str | None:
    """A header value as the body holds it: ``=?base64?...?=`` decoded, others as they are.

    None for an absent header or a sentinel that is not valid base64 of UTF-8.
    """
    if value is None:
        return None
    if value.startswith(_B64_PREFIX) and value.endswith(_B64_SUFFIX):
        encoded = value[len(_B64_PREFIX) : -len(_B64_SUFFIX)]
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return value


def unsupported_version(requested: Any, supported: Sequence[str]) -> Refusal:
    """-32022 with ``data.supported``: what a client retries with."""
    return Refusal(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(supported), "requested": requested},
    )


def check_envelope(
    body: Mapping[str, Any], headers: httpx.Headers, served: Sequence[str]
) -> Refusal | str:
    """The request's protocol version, or the first rule it breaks.

    Order (first failure wins): ``_meta`` carries version and capabilities (-32602); the
    ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers match the body
    (-32020); the version is one this server serves statelessly (-32022, listing ``served``).
    """
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return Refusal(
            INVALID_PARAMS,
            f"params._meta must be an object with {mt.PROTOCOL_VERSION_META_KEY!r} and"
            f" {mt.CLIENT_CAPABILITIES_META_KEY!r}",
        )
    required = (mt.PROTOCOL_VERSION_META_KEY, mt.CLIENT_CAPABILITIES_META_KEY)
    missing = [key for key in required if key not in meta]
    if missing:
        return Refusal(INVALID_PARAMS, f"params._meta is missing {', '.join(missing)}")
    version = meta[mt.PROTOCOL_VERSION_META_KEY]
    header_version = headers.get("mcp-protocol-version")
    if header_version is None or header_version != version:
        return Refusal(
            HEADER_MISMATCH,
            f"Header mismatch: MCP-Protocol-Version {header_version!r} does not match"
            f" _meta {version!r}",
        )
    method = body.get("method")
    header_method = headers.get("mcp-method")
    if header_method != method:
        return Refusal(
            HEADER_MISMATCH,
            f"Header mismatch: Mcp-Method {header_method!r} does not match method {method!r}",
        )
    name_param = _NAME_PARAM.get(method) if isinstance(method, str) else None
    if name_param is not None and isinstance(params, dict):
        expected = params.get(name_param)
        raw = headers.get("mcp-name")
        if expected is not None and decode_header_value(raw) != expected:
            return Refusal(
                HEADER_MISMATCH,
                f"Header mismatch: Mcp-Name {raw!r} does not match {name_param} {expected!r}",
            )
    if not isinstance(version, str):
        return Refusal(INVALID_PARAMS, "the protocol version in _meta must be a string")
    if version not in served:
        return unsupported_version(version, served)
    return version


def _annotated(schema: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """``(property path, header name)`` of every ``x-mcp-header`` reachable by ``properties``."""
    if not isinstance(schema, Mapping):
        return
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for key, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        name = prop.get("x-mcp-header")
        if isinstance(name, str) and name:
            yield (*path, str(key)), name
        yield from _annotated(prop, (*path, str(key)))


def _value_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = arguments
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _matches(value: Any, header: str) -> bool:
    if isinstance(value, bool):
        return header == ("true" if value else "false")
    if isinstance(value, int):
        try:
            return float(header) == value
        except ValueError:
            return False
    return isinstance(value, str) and header == value


def check_param_headers(
    input_schema: Mapping[str, Any], arguments: Mapping[str, Any], headers: httpx.Headers
) -> Refusal | None:
    """Each ``x-mcp-header`` argument present in the body must arrive as ``Mcp-Param-{Name}``.

    An absent or null argument expects no header; integers compare numerically.
    """
    for path, name in _annotated(input_schema):
        value = _value_at(arguments, path)
        if value is None:
            continue
        raw = headers.get(f"mcp-param-{name}")
        if raw is None:
            return Refusal(HEADER_MISMATCH, f"Header mismatch: Mcp-Param-{name} is missing")
        decoded = decode_header_value(raw)
        if decoded is None or not _matches(value, decoded):
            return Refusal(
                HEADER_MISMATCH,
                f"Header mismatch: Mcp-Param-{name} {raw!r} does not match {'.'.join(path)}",
            )
    return None
