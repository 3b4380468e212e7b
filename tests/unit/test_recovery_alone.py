"""The recovery layer on its own: its "re-send or outcome unknown" decisions need no client.

The client hands it a way to list tools (to read their annotations); here that is a stub
that records its calls, so each decision and its inputs are seen directly.
"""

from __future__ import annotations

import math

import mcp_types
import pytest

from mcp_resilient import Event, OutcomeUnknownTimeoutError, RequestTimeoutError, RetryPolicy
from mcp_resilient._classify import IDEMPOTENCY_META_KEY
from mcp_resilient._eras import Negotiator
from mcp_resilient._events import EventSink
from mcp_resilient._exchange import InFlight
from mcp_resilient._handlers import Handlers
from mcp_resilient._recovery import ClientStats, Recovery

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9/mcp"


def _tool(name: str, *, read_only: bool) -> mcp_types.Tool:
    return mcp_types.Tool(
        name=name,
        input_schema={"type": "object"},
        annotations=mcp_types.ToolAnnotations(read_only_hint=read_only),
    )


class Layer:
    """A ``Recovery`` with a stub tool lister and a record of its events."""

    def __init__(self, listed: list[mcp_types.Tool], *, trust_annotations: bool = True) -> None:
        self.lists: list[float] = []
        self.events: list[Event] = []
        self.listed = listed
        handlers = Handlers()

        async def on_event(event: Event) -> None:
            self.events.append(event)

        self.recovery = Recovery(
            (URL,),
            policy=RetryPolicy(),
            headers={},
            auth=None,
            max_event_bytes=1 << 20,
            handlers=handlers,
            events=EventSink(on_event),
            negotiator=Negotiator(
                "auto",
                client_info=mcp_types.Implementation(name="t", version="0"),
                capabilities=handlers.capabilities(),
                tool=lambda name: None,
                wants_notifications=False,
            ),
            listen=False,
            resume_tool=None,
            trust_annotations=trust_annotations,
            on_resume_failure="raise",
            stats=ClientStats(),
            list_tools=self.list_tools,
        )

    async def list_tools(self, timeout: float) -> object:
        self.lists.append(timeout)
        self.recovery.tools = {tool.name: tool for tool in self.listed}
        return self.listed


def _call(name: str) -> dict[str, object]:
    return {"name": name, "arguments": {}}


async def test_idempotent_false_is_never_resent_and_looks_nothing_up() -> None:
    layer = Layer([_tool("search", read_only=True)])
    assert not await layer.recovery.safe("tools/call", _call("search"), False, math.inf)
    assert layer.lists == []


async def test_read_only_methods_are_resent_without_a_lookup() -> None:
    layer = Layer([])
    assert await layer.recovery.safe("tools/list", None, None, math.inf)
    assert await layer.recovery.safe("resources/read", {"uri": "x://y"}, None, math.inf)
    assert not await layer.recovery.safe("resources/subscribe", {"uri": "x://y"}, None, math.inf)
    assert await layer.recovery.safe("resources/subscribe", {"uri": "x://y"}, True, math.inf)
    assert layer.lists == []


async def test_unseen_annotations_are_looked_up_once_and_then_decide() -> None:
    layer = Layer([_tool("search", read_only=True), _tool("pay", read_only=False)])
    assert await layer.recovery.safe("tools/call", _call("search"), None, math.inf)
    assert len(layer.lists) == 1
    assert not await layer.recovery.safe("tools/call", _call("pay"), None, math.inf)
    assert len(layer.lists) == 1  # listed now: no second lookup


async def test_annotations_are_not_read_when_not_trusted() -> None:
    layer = Layer([_tool("search", read_only=True)], trust_annotations=False)
    assert not await layer.recovery.safe("tools/call", _call("search"), None, math.inf)
    assert layer.lists == []


async def test_a_key_counts_only_when_the_server_honours_keys() -> None:
    layer = Layer([_tool("pay", read_only=False)])
    keyed = {**_call("pay"), "_meta": {IDEMPOTENCY_META_KEY: "k1"}}
    assert not await layer.recovery.safe("tools/call", keyed, None, math.inf)
    # Capabilities live with each endpoint (what its own initialize / discover said).
    layer.recovery.pool.endpoints[0].honours_keys = True
    assert await layer.recovery.safe("tools/call", keyed, None, math.inf)
    assert not await layer.recovery.safe("tools/call", keyed, None, math.inf, use_key=False)
    assert not await layer.recovery.safe("tools/call", _call("pay"), None, math.inf)


async def test_a_passed_deadline_is_in_doubt_only_if_sent_and_not_known_safe() -> None:
    layer = Layer([])
    sent = InFlight(sent=True, request_id=7)
    doubt = await layer.recovery.deadline_passed("tools/call", _call("pay"), None, 1.0, sent)
    assert isinstance(doubt, OutcomeUnknownTimeoutError)
    assert doubt.request_id == 7
    assert layer.recovery.stats.outcome_unknown == 1
    assert [e.kind for e in layer.events] == ["outcome_unknown"]

    plain = await layer.recovery.deadline_passed("tools/call", _call("pay"), None, 1.0, InFlight())
    assert isinstance(plain, RequestTimeoutError)
    assert not isinstance(plain, OutcomeUnknownTimeoutError)
    safe = await layer.recovery.deadline_passed("tools/call", _call("pay"), True, 1.0, sent)
    assert not isinstance(safe, OutcomeUnknownTimeoutError)
    assert layer.recovery.stats.outcome_unknown == 1
