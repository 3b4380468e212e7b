"""SSE resumption: GET + ``Last-Event-ID`` after a cut or a poll, exactly-once delivery, the
reconnect cap, and what happens when a stream cannot be resumed.

The client runs against ``mcp_resilient.testing``'s fake server, whose SSE events carry ids
(``"<stream>-<n>"``) from a per-session event store, so assertions can name the exact event
a reconnect resumed from. Waits are read from a spy on the session module's ``anyio.sleep``
instead of the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import anyio
import httpx
import mcp_types as mt
import pytest

from mcp_resilient import (
    Event,
    OutcomeUnknownError,
    RequestTimeoutError,
    ResilientClient,
    RetryPolicy,
    StreamEndedError,
    TransportError,
)
from mcp_resilient import _exchange as session_module
from mcp_resilient.testing import MockMCPServer, RecordedRequest, ToolContext

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.01, down_interval=0.01, budget=None)
LIMIT = 10
STEPS = (1, 2, 3)


@dataclass
class Events:
    items: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.items.append(event)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.items]

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.items if e.kind == kind]


@dataclass
class Progress:
    """A progress handler that keeps every notification it was given."""

    seen: list[float] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append(progress)


class SleepSpy(ModuleType):
    """Stands in for ``anyio`` inside ``mcp_resilient._exchange``: records every sleep.

    With ``real=False`` the sleeps take no time (a fake clock), so tests can check the
    client's own backoff without waiting for it.
    """

    def __init__(self, real: bool) -> None:
        super().__init__("anyio")
        self.delays: list[float] = []
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(anyio, name)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.sleep(delay if self._real else 0)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> SleepSpy:
    spy = SleepSpy(real=True)
    monkeypatch.setattr(session_module, "anyio", spy)
    return spy


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> SleepSpy:
    spy = SleepSpy(real=False)
    monkeypatch.setattr(session_module, "anyio", spy)
    return spy


def text(result: mt.CallToolResult) -> str:
    (block,) = result.content
    assert isinstance(block, mt.TextContent)
    return block.text


def define_tools(server: MockMCPServer) -> None:
    """Tools that stream progress (the fake emits it only for calls with a progress token)."""

    @server.tool
    def report(ctx: ToolContext) -> str:
        """Not annotated: never re-sent after an ambiguous failure."""
        for step in STEPS:
            ctx.progress(step, total=len(STEPS))
        return "done"

    @server.tool(read_only=True)
    def read_report(ctx: ToolContext) -> str:
        """Read only: may be re-sent."""
        for step in STEPS:
            ctx.progress(step, total=len(STEPS))
        return "done"


def resumes(server: MockMCPServer) -> list[RecordedRequest]:
    """The reconnecting GETs (listen streams carry no Last-Event-ID at first)."""
    return [r for r in server.requests_for(http_method="GET") if r.last_event_id is not None]


def locate(server: MockMCPServer, session_id: str, event_id: str) -> tuple[Any, int]:
    """The stream an event id belongs to, and how many of its events came up to it."""
    session = server.get_session(session_id)
    assert session is not None
    found = session.events.locate(event_id)
    assert found is not None, f"the server never sent event {event_id}"
    return found


# -- resuming a cut answer -----------------------------------------------------------------


@pytest.mark.parametrize("after_events", [1, 2, 3])
@pytest.mark.parametrize("error", ["disconnect", "read_error"])
async def test_cut_answer_is_resumed_with_get_and_last_event_id(
    mcp_mock: MockMCPServer, after_events: int, error: Any
) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=after_events, error=error, tool="report")
    events = Events()
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, listen=False, on_event=events
        ) as client:
            result = await client.call_tool("report", progress_handler=progress)
            session_id = client.session_id
            version = client.protocol_version
            stats = client.stats
    assert session_id is not None
    assert text(result) == "done"
    assert progress.seen == [1, 2, 3]  # each notification once, in order
    (call,) = mcp_mock.requests_for(tool="report")  # resumed, never re-sent
    assert call.faults == ["cut_stream"]
    assert mcp_mock.calls_to("report") == 1

    (get,) = resumes(mcp_mock)
    assert get.session_id == session_id
    assert get.protocol_version == version == "2025-11-25"
    assert get.headers["accept"] == "text/event-stream"
    assert get.status == 200
    # Last-Event-ID names the last event the client saw: the K-th event of the answer.
    stream, position = locate(mcp_mock, session_id, get.last_event_id)  # type: ignore[arg-type]
    assert stream.kind == "request"
    assert position == after_events

    (resumed,) = events.of("stream_resumed")
    assert resumed.detail["request_id"] == call.id
    assert resumed.detail["last_event_id"] == get.last_event_id
    assert resumed.session_id == session_id
    # A disconnection is not a cancellation, and nothing was retried.
    assert mcp_mock.requests_for("notifications/cancelled") == []
    assert (stats.retries, stats.sessions_lost, stats.outcome_unknown) == (0, 0, 0)
    assert "session_lost" not in events.kinds


async def test_graceful_close_before_the_response_is_resumed(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=2, graceful=True, tool="report")
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            result = await client.call_tool("report", progress_handler=progress)
    assert text(result) == "done"
    assert progress.seen == [1, 2, 3]
    assert len(resumes(mcp_mock)) == 1
    assert mcp_mock.calls_to("report") == 1


async def test_every_reconnect_carries_the_newest_event_id(mcp_mock: MockMCPServer) -> None:
    """Cut twice: the answer, then its replay. The second GET resumes from further on."""
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=1, tool="report")
    mcp_mock.faults.cut_stream(after_events=1, http_method="GET")
    events = Events()
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, listen=False, on_event=events
        ) as client:
            result = await client.call_tool("report", progress_handler=progress)
            session_id = client.session_id
    assert session_id is not None
    assert text(result) == "done"
    assert progress.seen == [1, 2, 3]
    first, second = resumes(mcp_mock)
    assert first.faults == ["cut_stream"]
    assert locate(mcp_mock, session_id, first.last_event_id)[1] == 1  # type: ignore[arg-type]
    assert locate(mcp_mock, session_id, second.last_event_id)[1] == 2  # type: ignore[arg-type]
    assert [e.detail["last_event_id"] for e in events.of("stream_resumed")] == [
        first.last_event_id,
        second.last_event_id,
    ]
    assert mcp_mock.calls_to("report") == 1


async def test_a_resumed_stream_can_carry_more_than_the_response(
    mcp_mock: MockMCPServer,
) -> None:
    """Cut right away after the first event: everything else arrives on the GET."""

    @mcp_mock.tool
    def chatty(ctx: ToolContext) -> str:
        for step in range(1, 11):
            ctx.progress(step, total=10)
            ctx.log("info", f"step {step}")
        return "finished"

    logs: list[Any] = []

    async def on_log(params: mt.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    mcp_mock.faults.cut_stream(after_events=1, tool="chatty")
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, listen=False, log_handler=on_log
        ) as client:
            result = await client.call_tool("chatty", progress_handler=progress)
    assert text(result) == "finished"
    assert progress.seen == list(range(1, 11))
    assert logs == [f"step {n}" for n in range(1, 11)]


# -- polling -------------------------------------------------------------------------------


async def test_poll_waits_the_retry_interval_then_resumes(
    mcp_mock: MockMCPServer, sleeps: SleepSpy
) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.poll(retry_ms=30, tool="report")
    events = Events()
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, listen=False, on_event=events
        ) as client:
            result = await client.call_tool("report", progress_handler=progress)
            session_id = client.session_id
    assert session_id is not None
    assert text(result) == "done"
    assert progress.seen == [1, 2, 3]
    (call,) = mcp_mock.requests_for(tool="report")
    assert call.faults == ["poll"]
    (get,) = resumes(mcp_mock)
    # It resumed from the priming event: the first of the stream, an id with empty data.
    stream, position = locate(mcp_mock, session_id, get.last_event_id)  # type: ignore[arg-type]
    assert position == 1
    priming = stream.events[0]
    assert (priming.message, priming.retry) == (None, 30)
    (resumed,) = events.of("stream_resumed")
    assert resumed.detail["last_event_id"] == get.last_event_id
    # It waited exactly what the server asked, before reconnecting.
    assert sleeps.delays == [0.03]
    assert mcp_mock.calls_to("report") == 1


async def test_server_retry_field_sets_the_reconnect_wait(
    mcp_mock: MockMCPServer, sleeps: SleepSpy
) -> None:
    mcp_mock.sse_retry_ms = 7  # every answer stream starts with "retry: 7"
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=2, tool="report")
    mcp_mock.faults.cut_stream(after_events=1, http_method="GET")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            result = await client.call_tool("report", progress_handler=Progress())
    assert text(result) == "done"
    assert len(resumes(mcp_mock)) == 2
    assert sleeps.delays == [0.007, 0.007]


async def test_without_a_retry_field_the_wait_is_jittered_and_grows(
    mcp_mock: MockMCPServer, fake_clock: SleepSpy
) -> None:
    """No ``retry:``: random in [0, min(10 s, 0.1 s x 2^n)], n = reconnects without news."""
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=1, respond=False, tool="report")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            with pytest.raises(OutcomeUnknownError):
                await client.call_tool("report", progress_handler=Progress())
    delays = fake_clock.delays
    assert len(delays) == 5
    for n, delay in enumerate(delays):
        assert 0 <= delay <= min(10.0, 0.1 * 2**n), (n, delays)


# -- giving up -----------------------------------------------------------------------------


@pytest.mark.mcp_mock(sse_retry_ms=1)
@pytest.mark.parametrize("graceful", [True, False])
async def test_a_stream_that_never_brings_news_gives_up_after_5_reconnects(
    mcp_mock: MockMCPServer, graceful: bool
) -> None:
    define_tools(mcp_mock)
    # One event, then the answer is gone for good: every replay is empty.
    mcp_mock.faults.cut_stream(after_events=1, respond=False, graceful=graceful, tool="report")
    events = Events()
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, listen=False, on_event=events, timeout=5
        ) as client:
            session_id = client.session_id
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.call_tool("report", progress_handler=progress)
            stats = client.stats
    cause = caught.value.__cause__
    assert isinstance(cause, StreamEndedError)
    assert "gave up after 5 reconnects" in str(cause)
    assert caught.value.tool == "report"
    (call,) = mcp_mock.requests_for(tool="report")  # never re-sent
    assert caught.value.request_id == call.id
    assert mcp_mock.calls_to("report") == 1
    gets = resumes(mcp_mock)
    assert len(gets) == 5
    assert {g.session_id for g in gets} == {session_id}
    assert len({g.last_event_id for g in gets}) == 1  # no news, same place every time
    assert [r.status for r in gets] == [200] * 5
    assert len(events.of("stream_resumed")) == 5
    assert progress.seen == [1]
    assert stats.outcome_unknown == 1


@pytest.mark.mcp_mock(sse_retry_ms=1)
async def test_a_read_only_call_whose_stream_gave_up_is_resent_on_a_new_session(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    events = Events()
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, listen=False, on_event=events, timeout=5
        ) as client:
            await client.list_tools()
            old_id = client.session_id
            mcp_mock.faults.cut_stream(after_events=1, respond=False, tool="read_report")
            result = await client.call_tool("read_report", progress_handler=progress)
            new_id = client.session_id
            stats = client.stats
    assert text(result) == "done"
    assert new_id != old_id
    first, second = mcp_mock.requests_for(tool="read_report")
    assert (first.session_id, second.session_id) == (old_id, new_id)
    assert mcp_mock.calls_to("read_report") == 2
    assert len(resumes(mcp_mock)) == 5
    assert all(g.session_id == old_id for g in resumes(mcp_mock))
    (lost,) = events.of("session_lost")
    assert lost.session_id == old_id
    assert lost.detail["reason"] == "in doubt"
    assert "gave up after 5 reconnects" in lost.detail["error"]
    (retry,) = events.of("retry")
    assert events.items.index(lost) < events.items.index(retry)
    # Progress of the abandoned attempt, then all of the new one.
    assert progress.seen == [1, 1, 2, 3]
    assert (stats.retries, stats.sessions_lost, stats.outcome_unknown) == (1, 1, 0)


async def test_a_reconnect_that_brings_news_resets_the_count(mcp_mock: MockMCPServer) -> None:
    """Six cuts in a row, each after one new event: more than 5 reconnects, no give-up."""

    @mcp_mock.tool
    def long_job(ctx: ToolContext) -> str:
        for step in range(1, 9):
            ctx.progress(step, total=8)
        return "finished"

    mcp_mock.sse_retry_ms = 1
    mcp_mock.faults.cut_stream(after_events=1, tool="long_job")
    mcp_mock.faults.cut_stream(after_events=1, http_method="GET", times=6)
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            result = await client.call_tool("long_job", progress_handler=progress)
    assert text(result) == "finished"
    assert progress.seen == list(range(1, 9))
    assert len(resumes(mcp_mock)) == 7
    assert mcp_mock.calls_to("long_job") == 1


async def test_deadline_covers_the_reconnect_wait(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.poll(retry_ms=5_000, tool="report")  # come back in 5 s
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            with anyio.fail_after(3):
                with pytest.raises(RequestTimeoutError):
                    await client.call_tool("report", timeout=0.3, progress_handler=Progress())
            (call,) = mcp_mock.requests_for(tool="report")
            # A timeout is a cancellation: the client tells the server (in the background).
            with anyio.fail_after(5):
                while not mcp_mock.requests_for("notifications/cancelled"):
                    await anyio.sleep(0.005)
    (cancel,) = mcp_mock.requests_for("notifications/cancelled")
    assert cancel.params["requestId"] == call.id
    assert resumes(mcp_mock) == []  # it never got to reconnect


# -- exactly once --------------------------------------------------------------------------


def replay_from_the_start(server: MockMCPServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the fake replay events the client already has: every resuming GET is served
    as if it asked from the stream's first event. Returns the ids the client really sent."""
    real: Callable[[httpx.Request], Any] = server.handle
    asked: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        last = request.headers.get("last-event-id")
        if request.method == "GET" and last is not None:
            asked.append(last)
            stream, _, _ = last.rpartition("-")
            request.headers["last-event-id"] = f"{stream}-1"
        response: httpx.Response = await real(request)
        return response

    monkeypatch.setattr(server, "handle", handle)
    return asked


async def test_replayed_events_are_delivered_once(
    mcp_mock: MockMCPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    define_tools(mcp_mock)
    asked = replay_from_the_start(mcp_mock, monkeypatch)
    mcp_mock.faults.cut_stream(after_events=3, tool="report")
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            result = await client.call_tool("report", progress_handler=progress)
            session_id = client.session_id
    assert session_id is not None
    assert text(result) == "done"
    (get,) = resumes(mcp_mock)
    assert locate(mcp_mock, session_id, asked[0])[1] == 3  # the client asked after event 3
    assert locate(mcp_mock, session_id, get.last_event_id)[1] == 1  # type: ignore[arg-type]
    assert progress.seen == [1, 2, 3]  # events 2 and 3 came twice, were handled once


async def test_replays_across_several_cuts_are_delivered_once(
    mcp_mock: MockMCPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    define_tools(mcp_mock)
    asked = replay_from_the_start(mcp_mock, monkeypatch)
    mcp_mock.faults.cut_stream(after_events=2, tool="report")
    # Each replay starts again at event 2. The first is cut after it (no news), the second
    # after event 3 (news), the third runs to the response.
    mcp_mock.faults.cut_stream(after_events=1, http_method="GET")
    mcp_mock.faults.cut_stream(after_events=2, http_method="GET")
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            result = await client.call_tool("report", progress_handler=progress)
            session_id = client.session_id
    assert session_id is not None
    assert text(result) == "done"
    assert progress.seen == [1, 2, 3]
    assert [locate(mcp_mock, session_id, a)[1] for a in asked] == [2, 2, 3]


# -- when a stream cannot be resumed -------------------------------------------------------


@pytest.mark.mcp_mock(sse_event_ids=False)
async def test_cut_without_event_ids_cannot_resume_unsafe_call(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=2, tool="report")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            await client.list_tools()
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.call_tool("report", progress_handler=Progress())
    cause = caught.value.__cause__
    assert isinstance(cause, TransportError)
    assert not isinstance(cause, StreamEndedError)
    assert mcp_mock.requests_for(http_method="GET") == []  # nothing to resume from
    assert len(mcp_mock.requests_for(tool="report")) == 1
    assert mcp_mock.calls_to("report") == 1


@pytest.mark.mcp_mock(sse_event_ids=False)
async def test_graceful_end_without_event_ids_is_a_stream_ended_error(
    mcp_mock: MockMCPServer,
) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=2, graceful=True, tool="report")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            await client.list_tools()
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.call_tool("report", progress_handler=Progress())
    cause = caught.value.__cause__
    assert isinstance(cause, StreamEndedError)
    assert "no event id" in str(cause)
    assert mcp_mock.requests_for(http_method="GET") == []


@pytest.mark.mcp_mock(sse_event_ids=False)
@pytest.mark.parametrize("graceful", [True, False])
async def test_cut_without_event_ids_resends_a_safe_call(
    mcp_mock: MockMCPServer, graceful: bool
) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=2, graceful=graceful, tool="read_report")
    progress = Progress()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            await client.list_tools()
            result = await client.call_tool("read_report", progress_handler=progress)
    assert text(result) == "done"
    assert len(mcp_mock.requests_for(tool="read_report")) == 2
    assert mcp_mock.calls_to("read_report") == 2
    assert mcp_mock.requests_for(http_method="GET") == []
    assert progress.seen == [1, 2, 1, 2, 3]  # without ids, nothing can be de-duplicated


async def test_cut_before_the_first_event_cannot_resume(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=0, tool="report")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, listen=False) as client:
            await client.list_tools()
            with pytest.raises(OutcomeUnknownError):
                await client.call_tool("report", progress_handler=Progress())
    assert resumes(mcp_mock) == []
    assert mcp_mock.calls_to("report") == 1


@pytest.mark.mcp_mock(get_stream=False)
async def test_get_not_allowed_cannot_resume(mcp_mock: MockMCPServer) -> None:
    define_tools(mcp_mock)
    mcp_mock.faults.cut_stream(after_events=1, tool="report")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            await client.list_tools()
            with pytest.raises(OutcomeUnknownError) as caught:
                await client.call_tool("report", progress_handler=Progress())
    cause = caught.value.__cause__
    assert isinstance(cause, StreamEndedError)
    assert "405" in str(cause)
    (get,) = resumes(mcp_mock)  # one try, then it stops: 405 will not change
    assert get.status == 405


@pytest.mark.parametrize("tool", ["report", "read_report"])
async def test_session_gone_when_resuming(mcp_mock: MockMCPServer, tool: str) -> None:
    """The reconnecting GET gets 404: the request may have run, so it is in doubt."""
    define_tools(mcp_mock)
    events = Events()
    with anyio.fail_after(LIMIT):
        async with ResilientClient(
            mcp_mock.url, retry=FAST, listen=False, on_event=events
        ) as client:
            await client.list_tools()
            old_id = client.session_id
            mcp_mock.faults.cut_stream(after_events=1, tool=tool)
            mcp_mock.faults.expire_session(http_method="GET")
            if tool == "report":
                with pytest.raises(OutcomeUnknownError) as caught:
                    await client.call_tool(tool, progress_handler=Progress())
                cause = caught.value.__cause__
                assert isinstance(cause, StreamEndedError)
                assert "404" in str(cause)
            else:
                assert text(await client.call_tool(tool, progress_handler=Progress())) == "done"
            new_id = client.session_id if tool == "read_report" else None
    (get,) = resumes(mcp_mock)
    assert (get.session_id, get.status) == (old_id, 404)
    calls = mcp_mock.requests_for(tool=tool)
    if tool == "report":
        assert len(calls) == 1
    else:
        assert [c.session_id for c in calls] == [old_id, new_id]
        assert new_id != old_id
    assert events.of("session_lost")[0].session_id == old_id


# -- the listen stream ---------------------------------------------------------------------


@pytest.mark.mcp_mock(sse_retry_ms=1)
async def test_listen_stream_resumes_after_a_cut_without_duplicates(
    mcp_mock: MockMCPServer,
) -> None:
    logs: list[Any] = []

    async def on_log(params: mt.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    mcp_mock.faults.cut_stream(after_events=1, http_method="GET")
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, log_handler=on_log) as client:
            session_id = client.session_id
            assert session_id is not None
            for word in ("one", "two", "three"):
                mcp_mock.log("info", word)
            with anyio.fail_after(5):
                while len(logs) < 3:
                    await anyio.sleep(0.005)
            mcp_mock.log("info", "four")
            with anyio.fail_after(5):
                while len(logs) < 4:
                    await anyio.sleep(0.005)
    assert logs == ["one", "two", "three", "four"]
    first, second = mcp_mock.requests_for(http_method="GET")
    assert first.last_event_id is None
    assert first.faults == ["cut_stream"]
    stream, position = locate(mcp_mock, session_id, second.last_event_id)  # type: ignore[arg-type]
    assert (stream.kind, position) == ("listen", 1)
    assert second.session_id == session_id


def listen_gets(server: MockMCPServer) -> list[RecordedRequest]:
    return [r for r in server.requests_for(http_method="GET") if r.session_id is not None]


async def wait_for_log(caplog: pytest.LogCaptureFixture, needle: str, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not any(needle in r.getMessage() for r in caplog.records):
            await anyio.sleep(0.002)


@pytest.mark.mcp_mock(sse_retry_ms=1)
async def test_listen_stream_keeps_the_newest_event_id_across_cuts(
    mcp_mock: MockMCPServer,
) -> None:
    logs: list[Any] = []

    async def on_log(params: mt.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    mcp_mock.faults.cut_stream(after_events=1, http_method="GET", times=2)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST, log_handler=on_log) as client:
            session_id = client.session_id
            assert session_id is not None
            for word in ("one", "two", "three"):
                mcp_mock.log("info", word)
            with anyio.fail_after(5):
                while len(logs) < 3:
                    await anyio.sleep(0.005)
    assert logs == ["one", "two", "three"]
    first, second, third = listen_gets(mcp_mock)
    assert first.last_event_id is None
    assert locate(mcp_mock, session_id, second.last_event_id)[1] == 1  # type: ignore[arg-type]
    assert locate(mcp_mock, session_id, third.last_event_id)[1] == 2  # type: ignore[arg-type]


async def test_listen_stream_gives_up_after_5_empty_reconnects(
    mcp_mock: MockMCPServer, fake_clock: SleepSpy, caplog: pytest.LogCaptureFixture
) -> None:
    """Every GET ends at once, empty: stop after 5 reconnects in a row without news."""
    caplog.set_level("INFO", logger="mcp_resilient")
    mcp_mock.faults.cut_stream(after_events=0, graceful=True, http_method="GET", times=None)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST) as client:
            mcp_mock.log("info", "never delivered")  # gives the cut something to cut before
            await wait_for_log(caplog, "giving up after 5 idle reconnects", timeout=5)
            assert client.session_id is not None
    assert len(listen_gets(mcp_mock)) == 5
    assert all(0 <= d <= min(30.0, 0.5 * 2 ** (n + 1)) for n, d in enumerate(fake_clock.delays))


@pytest.mark.mcp_mock(sse_retry_ms=1)
async def test_listen_stream_with_only_retry_fields_still_gives_up(
    mcp_mock: MockMCPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mcp_resilient")
    mcp_mock.faults.cut_stream(after_events=0, graceful=True, http_method="GET", times=None)
    with anyio.fail_after(LIMIT):
        async with ResilientClient(mcp_mock.url, retry=FAST):
            mcp_mock.log("info", "never delivered")
            await wait_for_log(caplog, "giving up after 5 idle reconnects", timeout=LIMIT)
    assert len(listen_gets(mcp_mock)) == 5


async def test_listen_stream_reconnects_are_never_faster_than_the_floor(
    fake_clock: SleepSpy,
) -> None:
    """A server polling the listen stream with `retry: 0` (a new id, then close, each time)."""
    from mcp_resilient._events import EventSink
    from mcp_resilient._exchange import _LISTEN_MIN_RECONNECT_SECONDS, Session
    from mcp_resilient._handlers import Handlers
    from mcp_resilient._transports import StreamCursor

    class PollingWire:
        url = "http://mcp.test/mcp"
        gets = 0

        async def get_stream(
            self, headers: dict[str, str], *, session_id: str | None, cursor: StreamCursor
        ) -> Any:
            self.gets += 1
            cursor.retry_ms = 0
            cursor.last_event_id = f"prime-{self.gets}"  # new id: progress, keep polling
            cursor.events += 1

            async def nothing() -> Any:
                return
                yield

            return nothing()

    class Era:
        session_id = "s1"
        protocol_version = "2025-11-25"

        def headers(self, method: str) -> dict[str, str]:
            return {}

    wire = PollingWire()
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            session = Session(wire, Era(), Handlers(), tg, EventSink(None))  # type: ignore[arg-type]
            session.start_listening()
            while wire.gets < 6:
                await anyio.sleep(0.01)
            session.stop()
    waits = fake_clock.delays
    assert len(waits) >= 5
    assert all(wait >= _LISTEN_MIN_RECONNECT_SECONDS for wait in waits), waits


def test_seen_ids_are_bounded_and_keep_the_most_recent() -> None:
    from mcp_resilient._transports import SeenIds

    seen = SeenIds(limit=3)
    for event_id in ("a", "b", "c", "d", "d"):
        seen.add(event_id)
    assert len(seen) == 3
    assert "a" not in seen
    assert all(event_id in seen for event_id in ("b", "c", "d"))
