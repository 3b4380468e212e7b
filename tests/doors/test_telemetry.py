"""OpenTelemetry: one span per call with the MCP semantic-convention attributes, recovery as
span events, the duration histogram and counters, and trace context in ``params._meta``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Generator
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from examples._launch import REPO_ROOT, free_port, server_env, stop_process, track
from mcp_resilient import OutcomeUnknownError, ResilientClient
from tests.rig import ServerCluster

from ._kill import BOUND, answered_by, gated_increment_args, kill_after_commit

pytestmark = pytest.mark.anyio

HANDSHAKE = "2025-11-25"

_exporter = InMemorySpanExporter()
_reader = InMemoryMetricReader()


class _WhileTesting(SimpleSpanProcessor):
    """Exports only while this module's tests run.

    OpenTelemetry allows one provider per process, so it outlives this module: without the
    gate, every later test's spans would pile up in the in-memory exporter.
    """

    enabled = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.enabled:
            super().on_end(span)


_processor = _WhileTesting(_exporter)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def otel() -> Generator[tuple[InMemorySpanExporter, InMemoryMetricReader], None, None]:
    """The SDK with in-memory export, installed once (OpenTelemetry allows one provider)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_processor)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))
    _processor.enabled = True
    try:
        yield _exporter, _reader
    finally:
        _processor.enabled = False
        _exporter.clear()


@pytest.fixture
def echo_server() -> Generator[str, None, None]:
    """tests/doors/echo_meta_server.py in its own process; yields its MCP URL."""
    port = free_port()
    proc = track(
        subprocess.Popen(
            [sys.executable, "-m", "tests.doors.echo_meta_server", "--port", str(port)],
            cwd=REPO_ROOT,
            env=server_env(),
            stdin=subprocess.DEVNULL,
        )
    )
    try:
        with httpx.Client(timeout=1.0, trust_env=False) as http:
            for _ in range(400):  # bounded: 400 waits of at most 0.05 s on the process
                assert proc.poll() is None, "the echo server exited"
                try:
                    if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
            else:
                raise AssertionError("the echo server never became healthy")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc)


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


async def test_trace_context_arrives_in_the_servers_meta(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], echo_server: str
) -> None:
    exporter, _ = otel
    exporter.clear()
    tracer = trace.get_tracer("agent")
    with anyio.fail_after(BOUND):
        async with ResilientClient(echo_server) as client:
            with tracer.start_as_current_span("agent step") as parent:
                result = await client.call_tool("echo_meta", meta={"mine": "kept"})
    meta = result.structured_content
    assert meta is not None
    trace_id = format(parent.get_span_context().trace_id, "032x")
    traceparent = meta["traceparent"]
    assert traceparent.split("-")[1] == trace_id
    assert meta["mine"] == "kept"
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "tools/call echo_meta"]
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    # The server got our span's context: the server's span would be its child.
    assert traceparent.split("-")[2] == format(span.context.span_id, "016x")


async def test_a_call_through_a_failover_is_one_span_with_the_failover_as_event(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], cluster: ServerCluster
) -> None:
    exporter, reader = otel
    with anyio.fail_after(BOUND):
        # The handshake era: a session pinned to one backend, which dies under it.
        async with ResilientClient(
            cluster.urls, listen=False, timeout=BOUND, protocol_version=HANDSHAKE
        ) as client:
            victim = answered_by(cluster, await client.call_tool("whoami"))
            victim.kill()
            exporter.clear()
            result = await client.call_tool("add", {"a": 2, "b": 3})
            session_id = client.session_id
    assert result.structured_content == {"a": 2, "b": 3, "sum": 5}
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("tools/call")]
    assert [s.name for s in spans] == ["tools/call add"], "one span per call"
    (span,) = spans
    attrs = dict(span.attributes or {})
    assert span.kind == trace.SpanKind.CLIENT
    assert attrs["mcp.method.name"] == "tools/call"
    assert attrs["gen_ai.tool.name"] == "add"
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] != victim.port  # where the answer came from
    assert attrs["mcp.protocol.version"] == HANDSHAKE
    assert session_id and attrs["mcp.session.id"] == session_id
    assert int(str(attrs["jsonrpc.request.id"])) >= 1
    assert "error.type" not in attrs
    kinds = [event.name for event in span.events]
    assert "failover" in kinds, kinds
    durations = metric_points(reader, "mcp.client.operation.duration")
    assert any(p.attributes.get("gen_ai.tool.name") == "add" for p in durations)
    assert sum(p.value for p in metric_points(reader, "mcp_resilient.client.failovers")) >= 1


async def test_errors_set_error_type(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], cluster: ServerCluster
) -> None:
    exporter, _ = otel
    exporter.clear()
    async with ResilientClient(cluster.urls, timeout=BOUND) as client:
        assert (await client.call_tool("fail")).is_error
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "tools/call fail"]
    assert (span.attributes or {})["error.type"] == "tool_error"
    assert "jsonrpc.request.id" in (span.attributes or {})


NO_SDK = """
import sys
import anyio
from mcp_resilient import OutcomeUnknownError, ResilientClient

async def main() -> None:
    async with ResilientClient(sys.argv[1]) as client:
        result = await client.call_tool("echo_meta")
    assert "opentelemetry.trace" in sys.modules, "the API was not even tried"
    print(sorted((result.structured_content or {}).keys()))

anyio.run(main)
"""


def test_without_an_sdk_it_is_a_no_op(echo_server: str) -> None:
    """API installed, no SDK configured: spans are non-recording, nothing goes in _meta."""
    done = subprocess.run(
        [sys.executable, "-c", NO_SDK, echo_server],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 0, done.stderr
    assert "traceparent" not in done.stdout
    assert done.stdout.strip().startswith("[")


async def test_an_unknown_outcome_is_an_error_span_and_counted(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], cluster: ServerCluster
) -> None:
    exporter, reader = otel
    args = gated_increment_args()
    async with ResilientClient(cluster.urls, timeout=BOUND) as client:
        await client.list_tools()
        exporter.clear()

        async def call() -> BaseException | None:
            try:
                await client.call_tool("increment", args)
            except OutcomeUnknownError as exc:
                return exc
            return None

        error, runs = await kill_after_commit(cluster, args, call)
    assert isinstance(error, OutcomeUnknownError) and runs == 1
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "tools/call increment"]
    attrs = dict(span.attributes or {})
    assert attrs["error.type"].endswith("OutcomeUnknownError")
    assert attrs["jsonrpc.request.id"] == str(error.request_id)
    assert span.status.status_code == trace.StatusCode.ERROR
    assert "outcome_unknown" in [event.name for event in span.events]
    counted = metric_points(reader, "mcp_resilient.client.outcome_unknown")
    assert sum(p.value for p in counted) >= 1
