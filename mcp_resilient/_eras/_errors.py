"""Errors of the 2026-07-28 era, recognised from an answer's body, and what they mean here.

The spec's fallback rule hangs on one question: is a ``4xx`` body a *recognised modern*
JSON-RPC error? If so the server speaks the stateless era; anything else means a
handshake-era server. These helpers answer it from the body alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import ProtocolError, SessionExpiredError

__all__ = [
    "HEADER_MISMATCH",
    "MISSING_CAPABILITY",
    "MODERN_ERROR_CODES",
    "UNSUPPORTED_VERSION",
    "EraChangedError",
    "HeaderMismatchError",
    "OnEraChanged",
    "error_of",
    "modern_error_code",
]

HEADER_MISMATCH = -32020
"""``HeaderMismatch``: headers missing or not matching the body."""

MISSING_CAPABILITY = -32021
"""``MissingRequiredClientCapability``."""

UNSUPPORTED_VERSION = -32022
"""``UnsupportedProtocolVersion``, with ``data.supported``."""

MODERN_ERROR_CODES = frozenset({HEADER_MISMATCH, MISSING_CAPABILITY, UNSUPPORTED_VERSION})

OnEraChanged = Callable[[str], None]
"""Told the endpoint URL whose server answered as if it changed eras."""


class HeaderMismatchError(ProtocolError):
    """-32020: the server found the request's MCP headers missing or not matching the body.

    Private: ``call_tool`` retries once with a freshly listed tool (its ``x-mcp-header``
    schema may have changed), then raises it as the ``ProtocolError`` it is.
    """


class EraChangedError(SessionExpiredError):
    """The server answered as a server of the other era: the request did not run.

    A private signal: classified like a lost session (nothing ran, start over), so the
    recovery layer negotiates again and re-sends. Callers only see it if every attempt
    ends this way.
    """


def error_of(body: str | None) -> dict[str, Any] | None:
    """The JSON-RPC ``error`` object in an HTTP body, if there is one."""
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # a hostile body: thousands of nested brackets
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error: dict[str, Any] = parsed["error"]
        return error
    return None


def modern_error_code(body: str | None) -> int | None:
    """The code of a recognised 2026-07-28 error in ``body``, else ``None``."""
    error = error_of(body)
    code = error.get("code") if error is not None else None
    return code if isinstance(code, int) and code in MODERN_ERROR_CODES else None
