"""Header values that come from data: session ids, names and tool arguments.

Both eras put values taken from the server or the caller into HTTP headers; this module
says which values are safe as they are and encodes the others (the 2026-07-28 revision's
``=?base64?...?=`` sentinel form), so nothing from data can inject a header.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import InvalidRequestError

__all__ = [
    "encode_header_value",
    "tool_header_error",
    "tool_param_headers",
    "valid_session_id",
]

_MAX_SESSION_ID = 1024
_SENTINEL_PREFIX = "=?base64?"
_SENTINEL_SUFFIX = "?="
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEADER_TYPES = frozenset({"string", "integer", "boolean"})
_MAX_SAFE_INTEGER = 2**53 - 1
# Keywords whose values are data, not schemas: an "x-mcp-header" key inside them is no annotation.
_DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})
_ANNOTATION = "x-mcp-header"


def valid_session_id(value: str) -> bool:
    """Visible ASCII only (0x21-0x7E), non-empty and of sane length: it goes into headers."""
    return 0 < len(value) <= _MAX_SESSION_ID and all(0x21 <= ord(ch) <= 0x7E for ch in value)


def encode_header_value(value: str, *, what: str = "a header value") -> str:
    """The value as it may ride in a header: plain when safe, else the base64 sentinel form.

    Plain means printable ASCII (0x20-0x7E), no leading or trailing whitespace, and not
    itself looking like the sentinel (which would make the server decode it). The sentinel
    form is base64 of the value's UTF-8 (2026-07-28, "Value Encoding"); a string with no
    UTF-8 form (a lone surrogate) cannot be carried: ``InvalidRequestError`` naming ``what``.
    """
    plain = (
        all(0x20 <= ord(ch) <= 0x7E for ch in value)
        and value == value.strip()
        and not (value.startswith(_SENTINEL_PREFIX) and value.endswith(_SENTINEL_SUFFIX))
    )
    if plain:
        return value
    try:
        utf8 = value.encode()
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        raise InvalidRequestError(
            f"{what} contains a lone surrogate (U+{ord(bad):04X} at index {exc.start}), which"
            " has no UTF-8 form: protocol 2026-07-28 mirrors it into an HTTP header as base64"
            " of its UTF-8, so it cannot be sent",
            hint="Pass valid Unicode text (a lone surrogate usually comes from decoding bytes"
            " with errors='surrogateescape')",
        ) from None
    encoded = base64.b64encode(utf8).decode("ascii")
    return f"{_SENTINEL_PREFIX}{encoded}{_SENTINEL_SUFFIX}"


def _annotations(
    node: Any, *, on_chain: bool, is_root: bool, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], dict[str, Any], bool]]:
    """Every ``x-mcp-header`` annotation: (property path, property schema, allowed here).

    An annotation is allowed only on a property reached from the root through
    ``properties`` keys alone (no ``items``, composition, conditionals or ``$ref``).
    """
    if isinstance(node, list):
        for item in node:
            yield from _annotations(item, on_chain=False, is_root=False, path=path)
        return
    if not isinstance(node, dict):
        return
    if _ANNOTATION in node:
        yield path, node, on_chain and not is_root
    for key, value in node.items():
        if key == _ANNOTATION or key in _DATA_KEYWORDS:
            continue
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                yield from _annotations(sub, on_chain=on_chain, is_root=False, path=(*path, name))
        else:
            yield from _annotations(value, on_chain=False, is_root=False, path=path)


def tool_header_error(input_schema: Mapping[str, Any]) -> str | None:
    """Why a tool's ``x-mcp-header`` annotations are invalid, or ``None`` when they are fine."""
    seen: set[str] = set()
    for path, prop, allowed in _annotations(
        dict(input_schema), on_chain=True, is_root=True, path=()
    ):
        where = ".".join(path) or "the schema root"
        name = prop.get(_ANNOTATION)
        if not allowed:
            return f"x-mcp-header on {where} is not reachable through properties alone"
        if not isinstance(name, str) or not name:
            return f"x-mcp-header on {where} is empty or not a string"
        if not all(ch in _TCHAR for ch in name):
            return f"x-mcp-header {name!r} on {where} is not an HTTP token"
        if prop.get("type") not in _HEADER_TYPES:
            return (
                f"x-mcp-header {name!r} on {where} is on type {prop.get('type')!r}"
                " (only string, integer and boolean are allowed)"
            )
        if name.lower() in seen:
            return f"x-mcp-header {name!r} is used twice (names are case-insensitive)"
        seen.add(name.lower())
    return None


def tool_param_headers(
    input_schema: Mapping[str, Any], arguments: Mapping[str, Any]
) -> dict[str, str]:
    """``Mcp-Param-{Name}`` headers for the annotated arguments present (and not null)."""
    headers: dict[str, str] = {}
    for path, prop, allowed in _annotations(
        dict(input_schema), on_chain=True, is_root=True, path=()
    ):
        name = prop.get(_ANNOTATION)
        if not allowed or not isinstance(name, str) or not name:
            continue
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            if abs(value) > _MAX_SAFE_INTEGER:
                continue
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            continue  # not a primitive the spec allows in a header
        headers[f"Mcp-Param-{name}"] = encode_header_value(
            text, what=f"argument {'.'.join(path)!r} (mirrored into header Mcp-Param-{name})"
        )
    return headers
