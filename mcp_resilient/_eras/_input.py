"""Multi round-trip requests (SEP-2322): answer ``input_required`` and send again.

In the stateless era a server does not send requests of its own; it answers with
``resultType: "input_required"``, the requests it needs answered (elicitation,
sampling, roots) and an opaque ``requestState``. The client answers them with its
handlers and sends the original request again, as a new request with a new id, carrying
``inputResponses`` and the state unchanged. Rounds are bounded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._handlers import Handlers, ServerRequestError
from ..errors import ProtocolError

__all__ = ["MAX_INPUT_ROUNDS", "with_input_rounds"]

MAX_INPUT_ROUNDS = 8
"""``input_required`` answers in a row before the client gives up on a request."""

T = TypeVar("T")
Send = Callable[[dict[str, Any] | None], Awaitable[tuple[dict[str, Any], T]]]


async def with_input_rounds(
    method: str,
    params: dict[str, Any] | None,
    send: Send[T],
    handlers: Handlers,
    *,
    max_rounds: int = MAX_INPUT_ROUNDS,
) -> tuple[dict[str, Any], T]:
    """``send(params)``, then answer every ``input_required`` result and send again."""
    raw, extra = await send(params)
    for _ in range(max_rounds):
        if raw.get("resultType") != "input_required":
            return raw, extra
        requests = raw.get("inputRequests")
        state = raw.get("requestState")
        if requests is None and not isinstance(state, str):
            raise ProtocolError(
                f"the server answered {method} with input_required but asked for nothing"
                " and sent no requestState"
            )
        again = {
            k: v for k, v in (params or {}).items() if k not in ("inputResponses", "requestState")
        }
        if requests is not None:
            again["inputResponses"] = await _answer_all(method, requests, handlers)
        if isinstance(state, str):
            again["requestState"] = state  # opaque: echoed exactly, never looked into
        raw, extra = await send(again)
    if raw.get("resultType") == "input_required":
        raise ProtocolError(
            f"{method} still required input after {max_rounds} rounds; giving up",
            hint="The server keeps asking; check the answers the handlers give",
        )
    return raw, extra


async def _answer_all(method: str, requests: Any, handlers: Handlers) -> dict[str, Any]:
    if not isinstance(requests, dict):
        raise ProtocolError(f"the server's inputRequests for {method} is not an object")
    answers: dict[str, Any] = {}
    for key, request in requests.items():
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise ProtocolError(f"input request {key!r} for {method} has no method")
        asked = request["method"]
        params = request.get("params")
        try:
            answers[key] = await handlers.answer(
                asked, params if isinstance(params, dict) else None
            )
        except ServerRequestError as exc:
            raise ProtocolError(
                f"could not answer the server's {asked} input request for {method}: {exc.message}",
                hint="Pass the matching handler (sampling_handler=, elicitation_handler=, roots=)",
            ) from None
    return answers
