"""Policy values: backoff, retry budget, failure classes, tool safety and the endpoint pool.

Pure unit tests: no network, no fake server. They pin the numbers and decisions that the
retry loop in ``Recovery.call`` (``_recovery.py``) builds on.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import mcp_types as mt
import pytest

from mcp_resilient import (
    NO_RETRY,
    ClientClosedError,
    ConnectError,
    EventTooLargeError,
    Failure,
    HTTPStatusError,
    MCPError,
    OutcomeUnknownError,
    ProtocolError,
    RequestTimeoutError,
    ResumeFailedError,
    RetryBudget,
    RetryPolicy,
    ServerError,
    SessionExpiredError,
    StreamEndedError,
    TransportError,
    UnsupportedProtocolVersionError,
    classify,
)
from mcp_resilient._classify import SAFE_METHODS, tool_is_safe
from mcp_resilient._policy import TokenBucket
from mcp_resilient._pool import EndpointPool
from mcp_resilient._transports import HTTPWire
from mcp_resilient._transports._http import _retry_after

URLS = ("http://a.test/mcp", "http://b.test/mcp", "http://c.test/mcp")
A, B, C = URLS

# -- RetryPolicy.backoff -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "cap"),
    [(0.05, 2.0), (0.001, 0.01), (1.0, 0.5), (0.0, 1.0)],
)
def test_backoff_is_full_jitter_within_the_exponential_cap(initial: float, cap: float) -> None:
    policy = RetryPolicy(initial_backoff=initial, max_backoff=cap)
    for attempt in range(1, 12):
        # "Scale of the first backoff" is initial_backoff: attempt n waits up to initial*2^(n-1).
        bound = min(cap, initial * 2 ** (attempt - 1))
        samples = [policy.backoff(attempt) for _ in range(400)]
        assert all(0.0 <= s <= bound for s in samples), (attempt, max(samples), bound)
        if bound > 0:
            # Full jitter: the whole range [0, bound] is used, not a fixed or half range.
            assert min(samples) < 0.25 * bound, (attempt, min(samples), bound)
            assert max(samples) > 0.75 * bound, (attempt, max(samples), bound)
        else:
            assert samples == [0.0] * len(samples)


def test_backoff_is_capped_for_huge_attempt_numbers() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=3.0)
    for attempt in (64, 1_000, 100_000):
        assert 0.0 <= policy.backoff(attempt) <= 3.0


def test_backoff_grows_with_the_attempt_number() -> None:
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=100.0)
    means = [sum(policy.backoff(n) for _ in range(500)) / 500 for n in (1, 4, 7)]
    # Expected means 0.005, 0.04, 0.32: each step is ~8x, so the order is certain.
    assert means[0] < means[1] < means[2]


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"initial_backoff": -0.1},
        {"max_backoff": -1.0},
        {"failure_threshold": 0},
        {"failure_threshold": -1},
    ],
)
def test_retry_policy_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("kwargs", [{"down_interval": -1.0}, {"max_down_interval": -1.0}])
def test_retry_policy_rejects_negative_down_intervals(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"max_tokens": -1},
        {"token_ratio": 0},
        {"token_ratio": -0.5},
    ],
)
def test_retry_budget_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)


def test_policy_defaults_and_no_retry() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts is None
    assert policy.budget == RetryBudget()
    assert policy.failure_threshold == 2
    assert NO_RETRY.max_attempts == 1
    assert NO_RETRY.budget is None
    with pytest.raises(AttributeError):
        policy.max_attempts = 3  # type: ignore[misc]  # frozen


# -- TokenBucket ---------------------------------------------------------------------------


def test_token_bucket_arithmetic() -> None:
    bucket = TokenBucket(RetryBudget(max_tokens=4, token_ratio=0.5))
    assert bucket.tokens == 4
    assert not bucket.throttled
    bucket.on_failure()
    assert bucket.tokens == 3
    assert not bucket.throttled  # 3 > 4/2
    bucket.on_failure()
    assert bucket.tokens == 2
    assert bucket.throttled  # at half: throttled ("no more than half")
    bucket.on_success()
    assert bucket.tokens == 2.5
    assert not bucket.throttled
    for _ in range(10):
        bucket.on_failure()
    assert bucket.tokens == 0  # never negative
    assert bucket.throttled
    for _ in range(100):
        bucket.on_success()
    assert bucket.tokens == 4  # capped at max_tokens
    assert not bucket.throttled


def test_token_bucket_recovers_only_through_successes() -> None:
    bucket = TokenBucket(RetryBudget(max_tokens=10, token_ratio=0.1))
    for _ in range(6):
        bucket.on_failure()
    assert bucket.tokens == pytest.approx(4)
    assert bucket.throttled
    for _ in range(9):
        bucket.on_success()
    assert bucket.tokens == pytest.approx(4.9)
    assert bucket.throttled
    for _ in range(2):
        bucket.on_success()
    assert bucket.tokens == pytest.approx(5.1)
    assert not bucket.throttled


def test_token_bucket_without_budget_never_throttles() -> None:
    bucket = TokenBucket(None)
    for _ in range(100):
        bucket.on_failure()
    assert not bucket.throttled
    bucket.on_success()
    assert bucket.tokens == 0.0


# -- classify ------------------------------------------------------------------------------


def _status(code: int, *, session_id: str | None = None) -> HTTPStatusError:
    return HTTPStatusError(code, f"got HTTP {code}", session_id=session_id)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SessionExpiredError(404, "session not found", session_id="s1"), Failure.SESSION_LOST),
        (ConnectError("refused"), Failure.NOT_SENT),
        (_status(503), Failure.NOT_SENT),
        (_status(429), Failure.NOT_SENT),
        (_status(500), Failure.IN_DOUBT),
        (_status(502), Failure.IN_DOUBT),
        (_status(504), Failure.IN_DOUBT),
        (_status(400), Failure.ANSWERED),
        (_status(401), Failure.ANSWERED),
        (_status(403), Failure.ANSWERED),
        (_status(406), Failure.ANSWERED),
        (_status(409), Failure.ANSWERED),
        (_status(501), Failure.ANSWERED),
        # A 404 is a lost session only as a SessionExpiredError (404 to a request that
        # carried a session id); a plain 404 (wrong URL) is final.
        (_status(404), Failure.ANSWERED),
        (_status(404, session_id="s1"), Failure.ANSWERED),
        (ProtocolError("bad json"), Failure.ANSWERED),
        (EventTooLargeError("too big"), Failure.ANSWERED),
        (StreamEndedError("gave up after 5 reconnects"), Failure.IN_DOUBT),
        (TransportError("connection broke"), Failure.IN_DOUBT),
        (ServerError(-32602, "bad params"), Failure.ANSWERED),
        (UnsupportedProtocolVersionError("1999-01-01", ("2025-11-25",)), Failure.ANSWERED),
        (ResumeFailedError("x", old_session_id="s0"), Failure.ANSWERED),
        (ClientClosedError("closed"), Failure.ANSWERED),
        (MCPError("anything else"), Failure.ANSWERED),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, MCPError) else str(v),
)
def test_classify(error: MCPError, expected: Failure) -> None:
    assert classify(error) is expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("session_id", "body", "expected"),
    [
        ("s1", '{"error": {"code": -32600, "message": "Session not found"}}', Failure.SESSION_LOST),
        ("s1", "", Failure.SESSION_LOST),
        (None, '{"error": {"code": -32600, "message": "Session not found"}}', Failure.ANSWERED),
    ],
)
async def test_a_404_is_a_lost_session_only_when_a_session_id_was_sent(
    session_id: str | None, body: str, expected: Failure
) -> None:
    """Decided by the wire from the status and the session id sent, never from the body."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, content=body.encode())

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        wire = HTTPWire(http, "http://mcp.test/mcp", max_message_bytes=1 << 20)
        message = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Mcp-Session-Id": session_id} if session_id else {}
        with pytest.raises(HTTPStatusError) as caught:
            async for _ in wire.post(message, headers, session_id=session_id):
                pass
    assert caught.value.status_code == 404
    assert isinstance(caught.value, SessionExpiredError) is (session_id is not None)
    assert classify(caught.value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0.25", 0.25),
        ("0", 0.0),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_header(value: str, expected: float | None) -> None:
    response = httpx.Response(503, headers={"retry-after": value} if value else {})
    assert _retry_after(response) == expected


def test_retry_after_http_date_in_the_future() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    response = httpx.Response(429, headers={"retry-after": format_datetime(when, usegmt=True)})
    delay = _retry_after(response)
    assert delay is not None
    assert 115 <= delay <= 120


def test_classify_ignores_the_message_text() -> None:
    misleading = ServerError(-32600, "Session not found (HTTP 404) connection refused 503")
    assert classify(misleading) is Failure.ANSWERED
    assert classify(ProtocolError("connection reset; retry later")) is Failure.ANSWERED
    assert classify(ConnectError("session not found")) is Failure.NOT_SENT


def test_classify_of_the_client_own_final_errors() -> None:
    # These are raised to the caller, never fed back into the loop; still, they are
    # transport errors and must not look like "not sent".
    timeout = RequestTimeoutError("too slow")
    unknown = OutcomeUnknownError("lost", method="tools/call", request_id=1, stage="sent")
    assert classify(timeout) is Failure.IN_DOUBT
    assert classify(unknown) is Failure.IN_DOUBT


def test_safe_methods_only_read() -> None:
    assert "tools/call" not in SAFE_METHODS
    assert "initialize" not in SAFE_METHODS
    assert {"ping", "tools/list", "resources/read", "prompts/get"} <= SAFE_METHODS


# -- tool_is_safe --------------------------------------------------------------------------


def _tool(name: str, **hints: bool) -> mt.Tool:
    annotations = mt.ToolAnnotations(**hints) if hints else None
    return mt.Tool(name=name, input_schema={"type": "object"}, annotations=annotations)


TOOLS = {
    t.name: t
    for t in (
        _tool("plain"),
        _tool("reader", read_only_hint=True),
        _tool("setter", idempotent_hint=True),
        _tool("deleter", destructive_hint=True, idempotent_hint=True),
        _tool("writer", read_only_hint=False, idempotent_hint=False),
        _tool("opaque", open_world_hint=True),
        _tool("destroyer", destructive_hint=True),
    )
}


@pytest.mark.parametrize(
    ("name", "idempotent", "trust", "expected"),
    [
        # The caller's word wins over everything.
        ("plain", True, True, True),
        ("plain", True, False, True),
        ("reader", False, True, False),
        ("setter", False, True, False),
        ("unlisted", True, True, True),
        ("unlisted", False, True, False),
        # Annotations, when trusted.
        ("reader", None, True, True),
        ("setter", None, True, True),
        ("deleter", None, True, True),
        ("plain", None, True, False),
        ("writer", None, True, False),
        ("opaque", None, True, False),
        ("destroyer", None, True, False),
        ("unlisted", None, True, False),
        # Annotations, not trusted.
        ("reader", None, False, False),
        ("setter", None, False, False),
        ("deleter", None, False, False),
    ],
)
def test_tool_is_safe(name: str, idempotent: bool | None, trust: bool, expected: bool) -> None:
    assert (
        tool_is_safe(name, idempotent=idempotent, trust_annotations=trust, tools=TOOLS) is expected
    )


# -- EndpointPool --------------------------------------------------------------------------


def make_pool(seed: int = 7, **policy: Any) -> EndpointPool:
    return EndpointPool(URLS, RetryPolicy(**policy), rng=random.Random(seed))


def test_pick_prefers_the_fewest_calls_in_flight() -> None:
    pool = make_pool()
    pool.get(A).in_flight = 2
    pool.get(B).in_flight = 0
    pool.get(C).in_flight = 1
    assert {pool.pick().url for _ in range(50)} == {B}
    pool.get(B).in_flight = 5
    assert {pool.pick().url for _ in range(50)} == {C}


def test_pick_breaks_ties_at_random_and_reproducibly() -> None:
    pool = make_pool(seed=3)
    pool.get(C).in_flight = 1
    picks = [pool.pick().url for _ in range(200)]
    assert set(picks) == {A, B}
    assert 50 < picks.count(A) < 150  # a fair coin, not a fixed order
    again = make_pool(seed=3)
    again.get(C).in_flight = 1
    assert [again.pick().url for _ in range(200)] == picks
    # All three tied: all three are used.
    assert {make_pool(seed=s).pick().url for s in range(60)} == set(URLS)


def test_pick_honours_avoid() -> None:
    pool = make_pool()
    assert A not in {pool.pick(avoid=A).url for _ in range(100)}
    pool.get(B).in_flight = 1
    assert {pool.pick(avoid=A).url for _ in range(50)} == {C}


def test_pick_uses_the_avoided_endpoint_when_it_is_the_only_one_up() -> None:
    pool = make_pool(down_interval=30.0)
    pool.mark_down(pool.get(B))
    pool.mark_down(pool.get(C))
    assert {pool.pick(avoid=A).url for _ in range(20)} == {A}


def test_pick_skips_down_endpoints() -> None:
    pool = make_pool(down_interval=30.0)
    pool.mark_down(pool.get(A))
    pool.get(B).in_flight = 3  # busier, but up
    pool.get(C).in_flight = 3
    picks = {pool.pick().url for _ in range(100)}
    assert picks == {B, C}


def test_pick_when_all_are_down_takes_the_soonest_up() -> None:
    pool = make_pool()
    now = time.monotonic()
    pool.get(A).down_until = now + 30
    pool.get(B).down_until = now + 10
    pool.get(C).down_until = now + 20
    assert pool.all_down()
    assert pool.pick().url == B
    assert pool.pick(avoid=A).url == B
    assert pool.pick(avoid=B).url == B  # still the soonest: avoid only breaks ties
    pool.get(C).down_until = now + 10
    assert pool.pick(avoid=B).url == C  # tie: the avoided one loses
    assert pool.pick(avoid=C).url == B


def test_an_endpoint_whose_down_time_passed_counts_as_up() -> None:
    pool = make_pool()
    pool.get(A).down_until = time.monotonic() - 1  # expired, probe not back yet
    pool.get(B).down_until = time.monotonic() + 60
    pool.get(C).down_until = time.monotonic() + 60
    assert not pool.all_down()
    assert pool.pick().url == A


def test_failure_accrual_marks_down_after_the_threshold() -> None:
    pool = make_pool(failure_threshold=3, down_interval=1.0, max_down_interval=3.0)
    endpoint = pool.get(A)
    assert not pool.record_failure(endpoint)
    assert not pool.record_failure(endpoint)
    before = time.monotonic()
    assert pool.record_failure(endpoint)
    after = time.monotonic()
    assert endpoint.down_interval == 1.0
    # Jittered into [interval/2, interval].
    assert before + 0.5 <= endpoint.down_until <= after + 1.0
    assert endpoint.is_down(after)
    assert pool.get(B).failures == 0  # accrual is per endpoint


def test_a_success_resets_failure_accrual() -> None:
    pool = make_pool(failure_threshold=2)
    endpoint = pool.get(A)
    assert not pool.record_failure(endpoint)
    assert not pool.record_success(endpoint)  # was not down
    assert not pool.record_failure(endpoint)  # consecutive count restarted
    assert pool.record_failure(endpoint)
    assert pool.record_success(endpoint)  # was down: True exactly once
    assert not pool.record_success(endpoint)
    assert (endpoint.failures, endpoint.down_until, endpoint.down_interval) == (0, 0.0, 0.0)


def test_down_interval_doubles_up_to_the_cap() -> None:
    pool = make_pool(down_interval=0.5, max_down_interval=3.0)
    endpoint = pool.get(A)
    intervals = []
    for _ in range(6):
        pool.mark_down(endpoint)
        intervals.append(endpoint.down_interval)
        remaining = endpoint.down_until - time.monotonic()
        assert 0.5 * endpoint.down_interval - 0.05 <= remaining <= endpoint.down_interval
    assert intervals == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    pool.record_success(endpoint)
    pool.mark_down(endpoint)
    assert endpoint.down_interval == 0.5  # starts over after a success


def test_all_down() -> None:
    pool = make_pool(down_interval=30.0)
    assert not pool.all_down()
    for url in URLS:
        pool.mark_down(pool.get(url))
    assert pool.all_down()
    pool.record_success(pool.get(B))
    assert not pool.all_down()


def test_get_unknown_endpoint() -> None:
    with pytest.raises(KeyError):
        make_pool().get("http://nope.test/mcp")
