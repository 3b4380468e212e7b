"""Typed exceptions raised by mcp-resilient.

Every failure says what happened, where (endpoint and session) and, where it
helps, what the caller can do about it. The tree is shallow on purpose:

- ``MCPError``: base of everything raised here.
  - ``ServerError``: the server answered with a JSON-RPC error (code and data kept).
  - ``TransportError``: something went wrong between us and the server.
    - ``ConnectError``: the request was never sent (refused, DNS, no route).
    - ``HTTPStatusError``: the server answered with an unexpected HTTP status.
      - ``SessionExpiredError``: 404 on a request that carried a session id.
    - ``ProtocolError``: the server sent something that breaks the protocol.
      - ``EventTooLargeError``: an SSE event exceeded the configured cap.
    - ``StreamEndedError``: an answer (SSE or JSON) ended before its response.
    - ``RequestTimeoutError``: the caller's deadline passed (also a ``TimeoutError``).
    - ``OutcomeUnknownError``: sent, then lost; not safe to re-send.
      - ``OutcomeUnknownTimeoutError``: sent, then the deadline passed (also a
        ``RequestTimeoutError``).
  - ``UnsupportedProtocolVersionError``: the server picked a version we do not speak.
  - ``ResumeFailedError``: a new session was made, but the old state did not move.
  - ``ClientClosedError``: the client was used outside ``async with`` or after close.
  - ``InvalidRequestError``: the call cannot be sent as given (also a ``ValueError``);
    checked before anything goes out.
  - ``ToolError``: the tool answered ``isError`` and the call asked for
    ``raise_on_error=True``.
  - ``AuthError``: OAuth failed (discovery, registration, authorization, token); the
    subclasses live in ``mcp_resilient.auth``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ClientClosedError",
    "ConnectError",
    "EventTooLargeError",
    "HTTPStatusError",
    "InvalidRequestError",
    "MCPError",
    "OutcomeUnknownError",
    "OutcomeUnknownTimeoutError",
    "ProtocolError",
    "RequestTimeoutError",
    "ResumeFailedError",
    "ServerError",
    "SessionExpiredError",
    "StreamEndedError",
    "ToolError",
    "TransportError",
    "UnsupportedProtocolVersionError",
]


def _where(endpoint: str | None, session_id: str | None) -> str:
    parts = []
    if endpoint:
        parts.append(f"endpoint {endpoint}")
    if session_id:
        parts.append(f"session {session_id}")
    return f" ({', '.join(parts)})" if parts else ""


class MCPError(Exception):
    """Base class for every error raised by mcp-resilient."""

    request_id: int | str | None = None
    """The JSON-RPC id of the request that failed, when there was one."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        session_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.endpoint = endpoint
        self.session_id = session_id
        self.hint = hint
        text = message + _where(endpoint, session_id)
        if hint:
            text += f". {hint}"
        super().__init__(text)


class ServerError(MCPError):
    """The server answered the request with a JSON-RPC error.

    This is an answer, not a transport failure: it is never retried.
    """

    def __init__(
        self,
        code: int,
        message: str,
        data: Any = None,
        *,
        method: str | None = None,
        endpoint: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.code = code
        self.data = data
        self.method = method
        what = (
            f"server error {code} on {method}: {message}"
            if method
            else f"server error {code}: {message}"
        )
        super().__init__(what, endpoint=endpoint, session_id=session_id)
        self.message = message


class TransportError(MCPError):
    """A failure between the client and the server (network, HTTP, framing)."""


class ConnectError(TransportError):
    """The request could not be sent: connection refused, DNS failure, no route."""


class HTTPStatusError(TransportError):
    """The server answered with an HTTP status the protocol does not allow here."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        endpoint: str | None = None,
        session_id: str | None = None,
        hint: str | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after
        super().__init__(message, endpoint=endpoint, session_id=session_id, hint=hint)


class SessionExpiredError(HTTPStatusError):
    """The server answered 404 to a request that carried a session id: the session is gone."""


class ProtocolError(TransportError):
    """The server sent something the protocol does not allow (bad JSON, wrong content type...)."""


class EventTooLargeError(ProtocolError):
    """An SSE event grew past the configured size cap."""


class StreamEndedError(TransportError):
    """An answer ended before it carried the response to the request: an SSE stream with
    no (or no more) events, a JSON body that is empty or cut short, a 200 with no body.

    The request reached the server, so it may have run: in doubt, like a cut connection."""


class RequestTimeoutError(TransportError, TimeoutError):
    """The call's deadline passed before the server answered."""


class UnsupportedProtocolVersionError(MCPError):
    """The server chose a protocol version this client does not speak."""

    def __init__(
        self,
        server_version: str,
        supported: tuple[str, ...],
        *,
        endpoint: str | None = None,
    ) -> None:
        self.server_version = server_version
        self.supported = supported
        super().__init__(
            f"server chose protocol version {server_version!r}, which this client does not speak"
            f" (supported: {', '.join(supported)})",
            endpoint=endpoint,
            hint="Upgrade mcp-resilient or configure the server to offer one of the supported versions",
        )


class ClientClosedError(MCPError):
    """The client is not open: use it inside ``async with ResilientClient(...)``."""


class InvalidRequestError(MCPError, ValueError):
    """The call cannot be sent as given; nothing went out. The message names the rule.

    Also a ``ValueError``, as a bad argument is. Raised for an idempotency key outside the
    extension's rule, or (2026-07-28 era) a name or header-mirrored argument with no UTF-8
    form (a lone surrogate), which the spec's header encoding cannot carry.
    """


class ToolError(MCPError):
    """The tool ran and reported a failure (``isError``), and the call asked to raise it.

    Raised only with ``call_tool(..., raise_on_error=True)``; ``result`` is the tool's
    answer, ``tool`` its name. The message is the tool's own text.
    """

    def __init__(
        self,
        message: str,
        *,
        tool: str,
        result: Any,
        endpoint: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.tool = tool
        self.result = result
        super().__init__(message, endpoint=endpoint, session_id=session_id)


class OutcomeUnknownError(TransportError):
    """The request was sent and then the connection failed: the server may have run it.

    Raised instead of re-sending a call that is not known to be safe to repeat (not
    read-only, not idempotent). Check the server's state before trying again, or pass
    ``idempotent=True`` for calls that may safely run twice.

    Also raised when a server that honours idempotency keys confirms the call started and
    never finished (``stage`` says so; see docs/exactly-once.md): it was not run again.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        request_id: int | str | None,
        stage: str,
        endpoint: str | None = None,
        session_id: str | None = None,
        tool: str | None = None,
    ) -> None:
        self.method = method
        self.stage = stage
        self.tool = tool
        super().__init__(
            message,
            endpoint=endpoint,
            session_id=session_id,
            hint="The server may or may not have run it; check before retrying,"
            " or pass idempotent=True if running it twice is harmless",
        )
        self.request_id = request_id


class OutcomeUnknownTimeoutError(OutcomeUnknownError, RequestTimeoutError):
    """The request went out and the deadline passed before its answer: it may have run.

    Both an ``OutcomeUnknownError`` (do not simply run it again) and a
    ``RequestTimeoutError`` (so ``except RequestTimeoutError`` and ``except TimeoutError``
    still catch it). Raised only for calls that are not safe to repeat; a timed-out
    read-only or idempotent call raises a plain ``RequestTimeoutError``.
    """


class ResumeFailedError(MCPError):
    """A lost session was replaced, but moving its state with the resume tool failed.

    The new session works, but it may lack the old session's state. Raised once, on the
    next call after the failed resume (see ``ResilientClient(on_resume_failure=...)``).
    """

    def __init__(
        self,
        message: str,
        *,
        old_session_id: str | None,
        endpoint: str | None = None,
        session_id: str | None = None,
    ) -> None:
        self.old_session_id = old_session_id
        super().__init__(message, endpoint=endpoint, session_id=session_id)


class AuthError(MCPError):
    """Authorization for a protected server failed; the message says what to fix.

    Never retried: credentials do not get better by asking again. The specific kinds
    (discovery, registration, token endpoint...) are in ``mcp_resilient.auth``.
    """
