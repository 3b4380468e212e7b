"""Sorting failures into the four classes that decide what may be retried.

- ``NOT_SENT``: the server never saw the request (connect failed; 503/429 from a
  proxy or a busy server). Safe to send again anywhere.
- ``SESSION_LOST``: 404 to a request that carried a session id. The server did not
  run it; a new session is needed.
- ``IN_DOUBT``: the request went out and the answer did not come back (connection
  broke, 502/504/500, stream ended and could not be resumed). It may have run.
- ``ANSWERED``: the server answered (a JSON-RPC error, a tool error, a 4xx): final.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import mcp_types

from .errors import (
    ConnectError,
    HTTPStatusError,
    MCPError,
    ProtocolError,
    SessionExpiredError,
    TransportError,
)

__all__ = [
    "IDEMPOTENCY_CAPABILITY",
    "IDEMPOTENCY_META_KEY",
    "LEDGER_CONFLICT",
    "LEDGER_IN_PROGRESS",
    "LEDGER_KEY_CONFLICT",
    "LEDGER_STARTED_NOT_FINISHED",
    "LEDGER_UNAVAILABLE",
    "SAFE_METHODS",
    "STATE_ID_META_KEY",
    "Failure",
    "classify",
    "honours_idempotency_keys",
    "tool_is_safe",
]

# The exactly-once extension (docs/exactly-once.md): names and codes shared by the client
# and the server kit. Codes sit outside JSON-RPC's reserved -32768..-32000 block, in
# -31999..-31900, which this extension claims for itself.
IDEMPOTENCY_CAPABILITY = "io.github.mcp-resilient/idempotency"
"""Capability (``experimental`` / ``extensions``) of a server that honours idempotency keys."""
IDEMPOTENCY_META_KEY = "io.github.mcp-resilient/idempotencyKey"
"""The ``params._meta`` key that names one ``tools/call`` across every re-send."""
STATE_ID_META_KEY = "io.github.mcp-resilient/stateId"
"""The ``params._meta`` key naming the client's server-side state in the 2026-07-28 era."""
LEDGER_STARTED_NOT_FINISHED = -31901
"""A run under this key started and its owner died before recording a result."""
LEDGER_IN_PROGRESS = -31902
"""A run under this key is still going; the duplicate gave up waiting for it."""
LEDGER_KEY_CONFLICT = -31903
"""The key was already used for a different tool or arguments."""
LEDGER_UNAVAILABLE = -31904
"""The ledger's store could not be reached; the call was not run."""
LEDGER_CONFLICT = -31905
"""A transactional call met concurrent writes on every attempt; nothing was applied."""


class Failure(enum.Enum):
    """The four failure classes; see the module docstring and the Failover guide."""

    NOT_SENT = "not sent"
    SESSION_LOST = "session lost"
    IN_DOUBT = "in doubt"
    ANSWERED = "answered"


SAFE_METHODS = frozenset(
    {
        "ping",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
    }
)
"""Methods that only read (or set idempotently), so re-sending them is always safe."""

_NOT_SENT_STATUSES = frozenset({429, 503})
_IN_DOUBT_STATUSES = frozenset({500, 502, 504})


def classify(exc: MCPError) -> Failure:
    """Which class a failure belongs to. Decided from types and statuses, never from text."""
    if isinstance(exc, SessionExpiredError):
        return Failure.SESSION_LOST
    if isinstance(exc, ConnectError):
        return Failure.NOT_SENT
    if isinstance(exc, HTTPStatusError):
        if exc.status_code in _NOT_SENT_STATUSES:
            return Failure.NOT_SENT
        if exc.status_code in _IN_DOUBT_STATUSES:
            return Failure.IN_DOUBT
        return Failure.ANSWERED
    if isinstance(exc, ProtocolError):
        return Failure.ANSWERED
    if isinstance(exc, TransportError):
        return Failure.IN_DOUBT
    return Failure.ANSWERED


def honours_idempotency_keys(capabilities: mcp_types.ServerCapabilities | None) -> bool:
    """Did the server declare the exactly-once extension (handshake or stateless era)?"""
    if capabilities is None:
        return False
    for table in (capabilities.experimental, getattr(capabilities, "extensions", None)):
        if isinstance(table, Mapping) and IDEMPOTENCY_CAPABILITY in table:
            return True
    return False


def tool_is_safe(
    name: str,
    *,
    idempotent: bool | None,
    trust_annotations: bool,
    tools: Mapping[str, mcp_types.Tool],
    keyed: bool = False,
) -> bool:
    """May a ``tools/call`` of ``name`` be re-sent after an ambiguous failure?

    ``keyed``: the call carries an idempotency key and the server honours keys, so a
    re-send returns the first run's outcome instead of running the tool again.
    """
    if idempotent is not None:
        return idempotent
    if keyed:
        return True
    if not trust_annotations:
        return False
    tool = tools.get(name)
    annotations = tool.annotations if tool is not None else None
    if annotations is None:
        return False
    return bool(annotations.read_only_hint) or bool(annotations.idempotent_hint)
