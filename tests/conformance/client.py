"""The client the official MCP conformance suite drives: ``mcp_resilient.ResilientClient``.

The suite runs ``python tests/conformance/client.py <server-url>`` with the scenario's name in
``MCP_CONFORMANCE_SCENARIO`` (and, for some scenarios, what to do in ``MCP_CONFORMANCE_CONTEXT``),
lets the client talk to its test server, and judges the traffic. The client runs with its
default ``protocol_version="auto"``: the same script passes the handshake-era and the
2026-07-28 runs of a scenario, which also proves the negotiation.
This script does what each scenario's server expects and also checks what comes back, so a
broken result fails here with a clear message even where the suite would not look.

Exit status: 0 when the scenario's steps succeeded, 1 when one failed (reason on stderr),
2 for a usage error (no URL, unknown scenario).

Only the public API of ``mcp_resilient`` is used.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mcp_types

if TYPE_CHECKING:
    from mcp_resilient import ResilientClient

CLIENT_NAME = "mcp-resilient-conformance-client"
REQUEST_TIMEOUT = 30.0  # seconds, per request (ResilientClient's own timeout)
SCENARIO_TIMEOUT = 45.0  # seconds, a whole scenario; below the suite's kill time in the test (60 s)

# What the elicitation-sep1034-client-defaults server asks for: every field has a default and
# the handler below leaves all of them out, so the library must fill in exactly these.
SEP1034_DEFAULTS: dict[str, Any] = {
    "name": "John Doe",
    "age": 30,
    "score": 95.5,
    "status": "active",
    "verified": True,
}


class ScenarioFailed(Exception):
    """A scenario step did not do what the scenario needs."""


def _text(result: mcp_types.CallToolResult) -> str:
    return "\n".join(
        block.text for block in result.content if isinstance(block, mcp_types.TextContent)
    )


async def _require_tool(client: ResilientClient, name: str) -> None:
    tools = await client.list_tools()
    names = [tool.name for tool in tools]
    if name not in names:
        raise ScenarioFailed(f"tools/list did not offer {name!r}; got {names}")


async def _call_ok(client: ResilientClient, name: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(name, args)
    text = _text(result)
    if result.is_error:
        raise ScenarioFailed(f"tools/call {name} returned isError=true: {text!r}")
    return text


class Recorder:
    """The elicitation handler: accepts every request with empty content, and remembers it."""

    def __init__(self) -> None:
        self.requests: list[mcp_types.ElicitRequestParams] = []

    async def __call__(self, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        self.requests.append(params)
        # Leave every field out: filling in the schema's defaults is the library's job.
        return mcp_types.ElicitResult(action="accept", content={})


async def scenario_initialize(client: ResilientClient, elicitations: Recorder) -> None:
    # The handshake happened on entering the client; one request proves the session works.
    tools = await client.list_tools()
    if not isinstance(tools, list):
        raise ScenarioFailed(f"list_tools() returned {type(tools).__name__}, not a list")


async def scenario_tools_call(client: ResilientClient, elicitations: Recorder) -> None:
    await _require_tool(client, "add_numbers")
    text = await _call_ok(client, "add_numbers", {"a": 5, "b": 3})
    if "8" not in text:
        raise ScenarioFailed(f"add_numbers(5, 3) answered {text!r}, expected the sum 8")


async def scenario_sse_retry(client: ResilientClient, elicitations: Recorder) -> None:
    # The server closes the tools/call SSE stream after a priming event (retry: 500); the
    # answer only comes on the GET stream the client must reopen with Last-Event-ID.
    await _require_tool(client, "test_reconnection")
    text = await _call_ok(client, "test_reconnection", {})
    if "Reconnection test completed successfully" not in text:
        raise ScenarioFailed(f"test_reconnection answered {text!r}")


async def scenario_request_metadata(client: ResilientClient, elicitations: Recorder) -> None:
    # The server refuses the first request (-32022) and judges the _meta and header of the
    # rest: one more request after the negotiation is enough.
    if client.protocol_version != "2026-07-28":
        raise ScenarioFailed(f"negotiated {client.protocol_version!r}, expected 2026-07-28")
    await client.list_tools()
    await client.call_tool("any", {})


async def scenario_request_state(client: ResilientClient, elicitations: Recorder) -> None:
    # Two input_required flows side by side with an unrelated call: each retry must carry
    # its own answers and state, and nothing of them may leak into the other call.
    echoed, unrelated = await asyncio.gather(
        _call_ok(client, "test_mrtr_echo_state", {}),
        _call_ok(client, "test_mrtr_unrelated", {}),
    )
    expected = {
        "test_mrtr_echo_state": ("echo-state-ok", echoed),
        "test_mrtr_unrelated": ("unrelated-ok", unrelated),
        "test_mrtr_no_state": ("no-state-ok", await _call_ok(client, "test_mrtr_no_state", {})),
        "test_mrtr_no_result_type": (
            "no-result-type-test-ok",
            await _call_ok(client, "test_mrtr_no_result_type", {}),
        ),
    }
    for name, (want, got) in expected.items():
        if got != want:
            raise ScenarioFailed(f"{name} answered {got!r}, expected {want!r}")
    if len(elicitations.requests) != 2:
        raise ScenarioFailed(
            f"the elicitation handler answered {len(elicitations.requests)} input requests,"
            " expected 2 (echo_state and no_state)"
        )


async def scenario_standard_headers(client: ResilientClient, elicitations: Recorder) -> None:
    for tool in await client.list_tools():
        await _call_ok(client, tool.name, {})
    for resource in await client.list_resources():
        await client.read_resource(str(resource.uri))
    for prompt in await client.list_prompts():
        await client.get_prompt(prompt.name)


def _context() -> dict[str, Any]:
    raw = os.environ.get("MCP_CONFORMANCE_CONTEXT")
    if not raw:
        raise ScenarioFailed("the suite set no MCP_CONFORMANCE_CONTEXT for this scenario")
    context = json.loads(raw)
    if not isinstance(context, dict):
        raise ScenarioFailed(f"MCP_CONFORMANCE_CONTEXT is not an object: {raw[:200]}")
    return context


async def scenario_custom_headers(client: ResilientClient, elicitations: Recorder) -> None:
    # The context says which calls to make; the client must mirror the arguments whose
    # schema carries x-mcp-header into Mcp-Param-* headers (the suite checks them).
    await client.list_tools()
    calls = _context().get("toolCalls") or []
    if not calls:
        raise ScenarioFailed("the context lists no toolCalls")
    for call in calls:
        await _call_ok(client, call["name"], call.get("arguments") or {})


INVALID_HEADER_TOOLS = {
    "invalid_empty_header",
    "invalid_object_header",
    "invalid_array_header",
    "invalid_null_header",
    "invalid_number_header",
    "invalid_duplicate_same_case",
    "invalid_duplicate_diff_case",
    "invalid_space_in_name",
    "invalid_colon_in_name",
    "invalid_non_ascii_name",
    "invalid_control_char_name",
}


async def scenario_invalid_tool_headers(client: ResilientClient, elicitations: Recorder) -> None:
    names = {tool.name for tool in await client.list_tools()}
    offered = sorted(names & INVALID_HEADER_TOOLS)
    if offered:
        raise ScenarioFailed(f"list_tools() offered tools with invalid x-mcp-header: {offered}")
    if "valid_tool" not in names:
        raise ScenarioFailed(f"list_tools() left out valid_tool; got {sorted(names)}")
    await _call_ok(client, "valid_tool", {"region": "us-west1"})


async def scenario_ref_no_deref(client: ResilientClient, elicitations: Recorder) -> None:
    # Listing is the test: the client must not fetch the network $ref (the suite watches).
    tools = {tool.name: tool for tool in await client.list_tools()}
    schema = tools["lookup_user"].input_schema if "lookup_user" in tools else None
    if schema is None:
        raise ScenarioFailed(f"tools/list did not offer lookup_user; got {sorted(tools)}")
    if schema.get("properties", {}).get("id") != {"$ref": "#/$defs/userId"}:
        raise ScenarioFailed(f"the $ref in lookup_user's schema was not kept as sent: {schema}")


async def scenario_schema_preservation(client: ResilientClient, elicitations: Recorder) -> None:
    tools = {tool.name: tool for tool in await client.list_tools()}
    focal = tools.get("json_schema_2020_12_tool")
    if focal is None or "json_schema_echo" not in tools:
        raise ScenarioFailed(f"tools/list lacks the scenario's tools; got {sorted(tools)}")
    for keyword in ("$schema", "$defs", "additionalProperties"):
        if keyword not in focal.input_schema:
            raise ScenarioFailed(f"{keyword} was dropped from the listed inputSchema")
    await _call_ok(client, "json_schema_echo", {"schema": focal.input_schema})


async def scenario_elicitation_defaults(client: ResilientClient, elicitations: Recorder) -> None:
    await _require_tool(client, "test_client_elicitation_defaults")
    text = await _call_ok(client, "test_client_elicitation_defaults", {})
    if len(elicitations.requests) != 1:
        raise ScenarioFailed(
            f"the elicitation handler was called {len(elicitations.requests)} times, expected once"
        )
    # The server echoes what it received: "Elicitation completed: {json}".
    prefix = "Elicitation completed: "
    if not text.startswith(prefix):
        raise ScenarioFailed(f"the server did not get an accepted elicitation: {text!r}")
    received = json.loads(text.removeprefix(prefix))
    if received != SEP1034_DEFAULTS:
        raise ScenarioFailed(
            f"the server received elicitation content {received!r}; the library should have "
            f"filled in the schema defaults {SEP1034_DEFAULTS!r}"
        )


Step = Callable[["ResilientClient", Recorder], Awaitable[None]]

SCENARIOS: dict[str, Step] = {
    "initialize": scenario_initialize,
    "tools_call": scenario_tools_call,
    "sse-retry": scenario_sse_retry,
    "elicitation-sep1034-client-defaults": scenario_elicitation_defaults,
    "request-metadata": scenario_request_metadata,
    "sep-2322-client-request-state": scenario_request_state,
    "http-standard-headers": scenario_standard_headers,
    "http-custom-headers": scenario_custom_headers,
    "http-invalid-tool-headers": scenario_invalid_tool_headers,
    "json-schema-ref-no-deref": scenario_ref_no_deref,
    "json-schema-2020-12-preservation": scenario_schema_preservation,
}


async def _sample(params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
    return mcp_types.CreateMessageResult(
        role="assistant",
        content=mcp_types.TextContent(type="text", text="sampled"),
        model="conformance",
    )


# Extra handlers per scenario: request-metadata judges the capabilities they declare.
EXTRA_OPTIONS: dict[str, dict[str, Any]] = {
    "request-metadata": {"sampling_handler": _sample, "roots": []},
}


def load_client_class() -> type[ResilientClient]:
    """``mcp_resilient.ResilientClient``; from this checkout when the package is not installed."""
    try:
        module = importlib.import_module("mcp_resilient")
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        module = importlib.import_module("mcp_resilient")
    client_class = getattr(module, "ResilientClient", None)
    if client_class is None:
        raise ScenarioFailed(
            f"mcp_resilient (from {getattr(module, '__file__', None) or module.__path__}) "
            "has no ResilientClient"
        )
    return client_class  # type: ignore[no-any-return]


async def run(scenario: str, url: str) -> None:
    client_class = load_client_class()
    step = SCENARIOS[scenario]
    elicitations = Recorder()
    version = getattr(sys.modules["mcp_resilient"], "__version__", None) or "0.0.0"
    client_info = mcp_types.Implementation(name=CLIENT_NAME, version=str(version))
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT) as deadline:
            async with client_class(
                url,
                timeout=REQUEST_TIMEOUT,
                elicitation_handler=elicitations,
                client_info=client_info,
                **EXTRA_OPTIONS.get(scenario, {}),
            ) as client:
                await step(client, elicitations)
    except TimeoutError:
        if deadline.expired():
            raise ScenarioFailed(f"not done within {SCENARIO_TIMEOUT:g} s") from None
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, e.g. from task groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main(argv: list[str]) -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if len(argv) != 2:
        print("usage: MCP_CONFORMANCE_SCENARIO=<name> client.py <server-url>", file=sys.stderr)
        return 2
    if scenario not in SCENARIOS:
        print(
            f"conformance client: unsupported scenario {scenario!r}; "
            f"supported: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    try:
        asyncio.run(run(scenario, argv[1]))
    except Exception as exc:
        causes = _leaves(exc)
        if not all(isinstance(cause, ScenarioFailed) for cause in causes):
            traceback.print_exception(exc)
        for cause in causes:
            reason = (
                cause if isinstance(cause, ScenarioFailed) else f"{type(cause).__name__}: {cause}"
            )
            print(f"conformance client: scenario {scenario} FAILED: {reason}", file=sys.stderr)
        return 1
    print(f"conformance client: scenario {scenario} done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
