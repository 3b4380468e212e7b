"""Formatting and exit-code mapping, in process (no server, no terminal)."""

from __future__ import annotations

import base64
import io
from typing import Any

import mcp_types
import pytest

from mcp_resilient import (
    ConnectError,
    Event,
    HTTPStatusError,
    OutcomeUnknownError,
    ProtocolError,
    RequestTimeoutError,
    ServerError,
    StreamEndedError,
    TransportError,
)
from mcp_resilient.cli import _format as fmt
from mcp_resilient.cli._args import Options
from mcp_resilient.cli._output import Output, log_text
from mcp_resilient.cli._run import exit_code_for, explain, retry_policy


def tool(**annotations: Any) -> mcp_types.Tool:
    return mcp_types.Tool(
        name="t",
        input_schema={"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"]},
        annotations=mcp_types.ToolAnnotations(**annotations) if annotations else None,
    )


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, "-"),
        ({"read_only_hint": True, "open_world_hint": False}, "read-only"),
        ({"read_only_hint": True}, "read-only, open-world"),
        ({"read_only_hint": False}, "writes, destructive, open-world"),
        (
            {"idempotent_hint": True, "destructive_hint": False, "open_world_hint": False},
            "writes, idempotent",
        ),
    ],
)
def test_hints_apply_the_spec_defaults(annotations: dict[str, Any], expected: str) -> None:
    assert fmt.hints(tool(**annotations).annotations) == expected


def test_signature_marks_optional_arguments() -> None:
    assert fmt.signature(tool().input_schema) == "a, b?"
    assert fmt.signature({"type": "object"}) == "-"


def test_table_clips_only_the_last_column_to_the_width() -> None:
    text = fmt.table(("A", "B"), [("x", "a long description here")], width=12)
    assert text.splitlines() == ["A  B", "x  a long..."]
    assert fmt.table(("A", "B"), [("x", "a long description here")]).endswith("here")


def _result(**fields: Any) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult.model_validate(fields)


def test_structured_content_is_pretty_when_the_text_is_the_same_json() -> None:
    result = _result(content=[{"type": "text", "text": '{"sum":3}'}], structuredContent={"sum": 3})
    assert fmt.format_call_result(result) == '{\n  "sum": 3\n}'


def test_text_wins_when_it_says_something_else() -> None:
    result = _result(content=[{"type": "text", "text": "3"}], structuredContent={"result": 3})
    assert fmt.format_call_result(result) == "3"


def test_structured_content_without_text() -> None:
    assert fmt.format_call_result(_result(content=[], structuredContent={"result": []})) == (
        '{\n  "result": []\n}'
    )
    assert fmt.format_call_result(_result(content=[])) == "(no content)"


def test_binary_and_link_blocks_are_described() -> None:
    png = base64.b64encode(b"\x89PNG1234").decode()
    result = _result(
        content=[
            {"type": "image", "data": png, "mimeType": "image/png"},
            {"type": "resource_link", "uri": "file:///a.txt", "name": "a"},
        ]
    )
    assert fmt.format_call_result(result) == (
        "[image image/png, 8 bytes]\n[resource link file:///a.txt (a)]"
    )


def test_progress_rendering() -> None:
    bar = fmt.progress_bar(1, 4, "step 1", width=80)
    assert bar.startswith("[######..................]  25% 1/4  step 1")
    assert fmt.progress_bar(3, None, None, width=80) == "[3]"
    assert fmt.progress_line(2, 5, "step 2/5") == "progress 2/5 step 2/5"
    assert fmt.progress_line(0.5, None, None) == "progress 0.5"


def test_server_log_text() -> None:
    assert log_text("plain") == "plain"
    assert log_text({"msg": "hi", "extra": None}) == "hi"
    assert log_text({"message": "hi", "user": 7}) == 'hi {"user": 7}'
    assert log_text([1, 2]) == "[1, 2]"


def test_events_worth_a_note() -> None:
    failover = Event("failover", "http://b/mcp", "s2", {"from_endpoint": "http://a/mcp"})
    assert fmt.describe_event(failover) == (
        "failover: session moved from http://a/mcp to http://b/mcp (new session s2)"
    )
    retry = Event(
        "retry",
        "http://a/mcp",
        None,
        {"method": "initialize", "attempt": 1, "delay": 0.1, "error": "refused"},
    )
    assert fmt.describe_event(retry) == (
        "retry: initialize attempt 1 failed on http://a/mcp (refused); retrying in 0.1 s"
    )
    # As the client reports it after a failover: the event names where the retry goes.
    moved = Event(
        "retry",
        "http://b/mcp",
        None,
        {
            "method": "tools/call",
            "attempt": 1,
            "delay": 0.1,
            "error": "reset",
            "from_endpoint": "http://a/mcp",
        },
    )
    assert fmt.describe_event(moved) == (
        "retry: tools/call attempt 1 failed on http://a/mcp (reset); retrying in 0.1 s"
        " on http://b/mcp"
    )
    stateless = Event("failover", "http://b/mcp", None, {"from_endpoint": "http://a/mcp"})
    assert fmt.describe_event(stateless) == (
        "failover: requests moved from http://a/mcp to http://b/mcp"
    )
    assert fmt.describe_event(Event("session_started", "http://a/mcp", "s1")) is None
    assert fmt.describe_event(Event("outcome_unknown", "http://a/mcp", "s1")) is None


def test_output_writes_one_json_document_only() -> None:
    out = Output(json_mode=True, stdout=io.StringIO(), stderr=io.StringIO())
    out.document({"a": 1})
    with pytest.raises(RuntimeError):
        out.document({"b": 2})


def test_trace_only_when_verbose() -> None:
    quiet, loud = io.StringIO(), io.StringIO()
    Output(stderr=quiet).trace("x")
    Output(verbose=1, stderr=loud).trace("x")
    assert quiet.getvalue() == ""
    assert loud.getvalue().endswith("] x\n")


E = "http://a/mcp"
OUTCOME = OutcomeUnknownError("lost", method="tools/call", request_id=3, stage="sent", endpoint=E)


@pytest.mark.parametrize(
    ("exc", "phase", "code"),
    [
        (ConnectError("refused", endpoint=E), "connect", 3),
        (ConnectError("refused", endpoint=E), "call", 3),
        (RequestTimeoutError("no session in 5 s", endpoint=E), "connect", 3),
        (RequestTimeoutError("slow", endpoint=E), "call", 5),
        # Before the call went out (e.g. the tools/list that precedes it): nothing ran.
        (RequestTimeoutError("slow", endpoint=E), "command", 4),
        (StreamEndedError("ended", endpoint=E), "call", 5),
        (StreamEndedError("ended", endpoint=E), "command", 4),
        (TransportError("broke", endpoint=E), "call", 5),
        (OUTCOME, "call", 5),
        (ServerError(-32602, "bad params", method="tools/call"), "call", 4),
        (HTTPStatusError(401, "POST got HTTP 401", endpoint=E), "connect", 4),
        (HTTPStatusError(502, "POST got HTTP 502", endpoint=E), "call", 4),
        (ProtocolError("bad JSON", endpoint=E), "call", 4),
        (RuntimeError("bug"), "call", 4),
    ],
)
def test_exit_codes(exc: BaseException, phase: str, code: int) -> None:
    assert exit_code_for(exc, phase=phase) == code


class _TimedOutMayHaveRun(OutcomeUnknownError, RequestTimeoutError):
    """The library's "timed out and may have run" error has this shape (both bases)."""


@pytest.mark.parametrize(
    ("exc", "safe", "code"),
    [
        # A call that may run twice: a lost answer is a plain failure, nothing is in doubt.
        (RequestTimeoutError("slow", endpoint=E), True, 4),
        (StreamEndedError("ended", endpoint=E), True, 4),
        (RequestTimeoutError("slow", endpoint=E), False, 5),
        (_TimedOutMayHaveRun("late", method="tools/call", request_id=3, stage="sent"), False, 5),
        (_TimedOutMayHaveRun("late", method="tools/call", request_id=3, stage="sent"), True, 5),
    ],
)
def test_exit_codes_of_a_call_by_safety(exc: BaseException, safe: bool, code: int) -> None:
    assert exit_code_for(exc, phase="call", safe=safe) == code


def test_a_safe_timeout_is_explained_as_a_timeout() -> None:
    text = explain(RequestTimeoutError("slow", endpoint=E), phase="call", tool="get", safe=True)
    assert text == f"slow (endpoint {E}); try a larger --timeout if the server is just slow"


def test_explanations_say_what_where_and_what_to_try() -> None:
    text = explain(HTTPStatusError(401, "POST got HTTP 401", endpoint=E), phase="connect")
    assert (
        text
        == f"POST got HTTP 401 (endpoint {E}); pass credentials with -H 'Authorization: Bearer TOKEN'"
    )
    text = explain(RequestTimeoutError("slow", endpoint=E), phase="call", tool="inc")
    assert text.startswith(
        f"outcome unknown for tool 'inc': slow (endpoint {E}); the tool may or may not have run"
    )
    text = explain(ServerError(-32601, "nope", method="x/y"), phase="command")
    assert text.startswith("server error -32601 on x/y: nope; the server does not implement")


def test_retry_policy_tries_every_url_then_the_retries() -> None:
    opts = Options(urls=["http://a/mcp", "http://b/mcp"], command="ping")
    assert retry_policy(opts).max_attempts == 4
    opts.retries = 0
    assert retry_policy(opts).max_attempts == 2
    assert retry_policy(opts).failure_threshold == 1


def test_connect_failover_note_names_the_endpoint_that_failed() -> None:
    # Retry events name where the retry goes; the note must name where it failed.
    from types import SimpleNamespace

    from mcp_resilient.cli._run import _report_connect_failover, _State

    state = _State()
    state.events.append(
        Event(
            "retry",
            "http://b/mcp",
            None,
            {"method": "initialize", "attempt": 1, "from_endpoint": "http://a/mcp"},
        )
    )
    err = io.StringIO()
    client = SimpleNamespace(endpoint="http://b/mcp")
    _report_connect_failover(client, state, Output(stdout=io.StringIO(), stderr=err))  # type: ignore[arg-type]
    assert err.getvalue() == "mcp-call: failover: http://a/mcp failed; connected to http://b/mcp\n"
