"""Run the Python blocks of README.md and docs/**/*.md against the example server.

The convention is in ``tests/docs/README.md``; the runner (Sybil documents, an evaluator
with top-level ``await``, deadlines and ``#>`` output checks) is ``tests/docs/snippets.py``.
One test per page, each page in a fresh interpreter: its blocks run in order in one
namespace on one event loop. A failure names the page and the block's line, and the
traceback points into the Markdown file at the right line.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_resilient import ResilientClient, TransportError
from tests.docs.conftest import SKIPPED_PROPERTY
from tests.docs.installs import missing_installs
from tests.docs.snippets import (
    BLOCK_TIMEOUT,
    CLEANUP_TIMEOUT,
    REPO_ROOT,
    count_python_fences,
    doc_pages,
    python_blocks,
    rewrite_urls,
    run_page,
)
from tests.rig import ServerCluster, free_port


def _pages_with_python() -> Iterator[Any]:
    for path in doc_pages():
        if count_python_fences(path):
            yield pytest.param(path, id=path.relative_to(REPO_ROOT).as_posix())


def _no_unknown_tools(call_tool: Any) -> Any:
    """Wrap ``call_tool`` so a snippet calling a tool the server lacks fails loudly.

    The server answers an unknown tool with an ``isError`` result, which a snippet that
    does not check ``is_error`` would take for success (and print nothing useful).
    """

    @functools.wraps(call_tool)
    async def checked(self: ResilientClient, name: str, *args: Any, **kwargs: Any) -> Any:
        result = await call_tool(self, name, *args, **kwargs)
        if result.is_error and any(
            getattr(block, "text", "").startswith("Unknown tool") for block in result.content
        ):
            raise AssertionError(f"the snippet calls tool {name!r}, which the server does not have")
        return result

    return checked


def run_page_isolated(
    path: Path, base_urls: list[str], tmp_path: Path
) -> tuple[str | None, list[str]]:
    """``run_page`` in a fresh interpreter, as a reader runs a page.

    Pages set process-wide state a reader sets once at start-up (OpenTelemetry's global
    tracer provider, logging configuration): run in this process, it would leak into the
    pages and tests after them.
    """
    limit = BLOCK_TIMEOUT * max(1, count_python_fences(path)) + CLEANUP_TIMEOUT + 30
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, __file__, str(path), str(tmp_path), *base_urls],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{path.name}: the page did not finish within {limit:g} s", []
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return f"{path.name}: the page runner exited {proc.returncode}:\n{proc.stderr}", []
    outcome = json.loads(lines[-1])
    return outcome["failure"], outcome["skipped"]


def _main(argv: list[str]) -> int:
    """Entry point of ``run_page_isolated``'s child: run one page, print the outcome."""
    path, tmp_path, base_urls = Path(argv[0]), Path(argv[1]), argv[2:]
    ResilientClient.call_tool = _no_unknown_tools(ResilientClient.call_tool)  # type: ignore[method-assign]
    failure, skipped = run_page(path, base_urls, tmp_path)
    print(json.dumps({"failure": failure, "skipped": skipped}))
    return 0


@pytest.fixture
def checked_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls of tools the server does not have fail the page."""
    monkeypatch.setattr(ResilientClient, "call_tool", _no_unknown_tools(ResilientClient.call_tool))


@pytest.mark.integration
@pytest.mark.usefixtures("checked_calls")
@pytest.mark.parametrize("path", list(_pages_with_python()))
def test_page_snippets_run(
    path: Path, doc_servers: ServerCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    base_urls = [server.base_url for server in doc_servers]
    failure, skipped = run_page_isolated(path, base_urls, tmp_path)
    for line in skipped:
        request.node.user_properties.append((SKIPPED_PROPERTY, line))
    if failure is not None:
        pytest.fail(failure, pytrace=False)


@pytest.mark.integration
@pytest.mark.usefixtures("checked_calls")
def test_runner_fails_a_page_on_what_a_newcomer_hits(
    doc_servers: ServerCluster, tmp_path: Path
) -> None:
    base_urls = [server.base_url for server in doc_servers]
    pages = tmp_path / "pages"
    pages.mkdir()

    def page(name: str, text: str) -> tuple[str | None, list[str]]:
        (pages / name).write_text(text, encoding="utf-8")
        return run_page(pages / name, base_urls, tmp_path, root=pages)

    client = 'from mcp_resilient import ResilientClient\n\nurl = "http://127.0.0.1:8000/mcp"\n'
    failure, _ = page(
        "missing-tool.md",
        f"```python\n{client}```\n\n```python\nasync with ResilientClient(url) as c:\n"
        '    await c.call_tool("build", {"target": "all"})\n```\n',
    )
    assert failure is not None and failure.startswith("missing-tool.md:8: the block")
    assert "calls tool 'build', which the server does not have" in failure

    failure, skipped = page(
        "all-skipped.md", "<!-- snippet: skip: needs HAProxy -->\n```python\nboom()\n```\n"
    )
    assert failure == "all-skipped.md: every python block is skipped; at least one must run"
    assert skipped == ["all-skipped.md:3: needs HAProxy"]

    failure, skipped = page(
        "ok.md",
        f"```python\n{client}```\n\n<!-- snippet: skip: needs an LLM -->\n```python\nboom()\n```"
        "\n\n```python\nasync with ResilientClient(url) as c:\n"
        '    assert (await c.call_tool("add", {"a": 1, "b": 2})).structured_content["sum"] == 3\n'
        "```\n",
    )
    assert (failure, skipped) == (None, ["ok.md:9: needs an LLM"])

    failure, _ = page("no-python.md", "# Just text\n\n```bash\nls\n```\n")
    assert failure is None

    # Printed output: '#>' lines under a statement are what it prints, '...' is a wildcard.
    call = 'r = await c.call_tool("add", {"a": 1, "b": 2})'
    failure, _ = page(
        "wrong-output.md",
        f"```python\n{client}async with ResilientClient(url) as c:\n    {call}\n"
        "    print(r.structured_content)\n    #> {'result': 3}\n```\n",
    )
    assert failure is not None and failure.startswith("wrong-output.md:2: the block")
    assert "#> {'result': 3}\nbut it printed\n#> {'a': 1.0, 'b': 2.0, 'sum': 3.0}" in failure

    failure, _ = page(
        "right-output.md",
        f"```python\n{client}async with ResilientClient(url) as c:\n    {call}\n"
        "    print(r.structured_content)\n    #> {'a': 1.0, 'b': 2.0, ...}\n"
        "for i in range(2):\n    print('step', i)\n    #> step 0\n    #> step 1\n"
        "print(url.startswith('http'),\n      end='!\\n')\n#> True!\n```\n",
    )
    assert failure is None

    failure, _ = page("far.md", "<!-- snippet: pytest -->\n\nText.\n\n```python\nx = 1\n```\n")
    assert failure is not None and "must stand right above a python block" in failure
    failure, _ = page("bad.md", "<!-- snippet: skip -->\n```python\nx = 1\n```\n")
    assert failure is not None and "bad snippet directive 'skip'" in failure


def test_sybil_finds_every_block_with_its_directive(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n```python\nx = 1\n```\n\n<!-- snippet: skip: needs HAProxy -->\n"
        "```python\nboom()\n```\n\n!!! note\n    ```python\n    y = x + 1\n    ```\n\n"
        '<!-- snippet: pytest -->\n```py title="t.py"\ndef test_a(): pass\n```\n'
        "```bash\nls\n```\n",
        encoding="utf-8",
    )
    blocks = [(e.line + 1, str(e.parsed)) for e in python_blocks(page)]
    assert blocks == [
        (4, "x = 1\n"),
        (9, "boom()\n"),
        (14, "y = x + 1\n"),
        (19, "def test_a(): pass\n"),
    ]
    assert count_python_fences(page) == 4


def test_every_python_fence_of_the_docs_is_a_block_the_runner_runs() -> None:
    """No python block is missed (a fence attribute, an indent, a tilde fence)."""
    for path in doc_pages():
        assert len(python_blocks(path)) == count_python_fences(path), path


def test_printed_output_is_shown_the_same_way_on_every_page() -> None:
    """What a line prints is shown as ``#>`` lines under it, never as a trailing comment."""
    trailing = re.compile(r"^\s*print\(.*\)\s*#(?!>)")
    for path in doc_pages():
        for example in python_blocks(path):
            for offset, line in enumerate(str(example.parsed).splitlines()):
                assert not trailing.match(line), (
                    f"{path.relative_to(REPO_ROOT)}:{example.line + 1 + offset}: show what it "
                    "prints as '#> ...' lines under the print (see tests/docs/README.md)"
                )


def test_rewrite_urls_targets_each_replica() -> None:
    bases = ["http://127.0.0.1:41000", "http://127.0.0.1:41001", "http://127.0.0.1:41002"]
    code = (
        'a = "http://127.0.0.1:8000/mcp"; b = "http://localhost:8002/health";'
        ' c = "http://127.0.0.1:8009/mcp"; d = "http://127.0.0.1:80001/mcp"'
    )
    assert rewrite_urls(code, bases) == (
        'a = "http://127.0.0.1:41000/mcp"; b = "http://127.0.0.1:41002/health";'
        ' c = "http://127.0.0.1:8009/mcp"; d = "http://127.0.0.1:80001/mcp"'
    )


@pytest.mark.parametrize("path", list(_pages_with_python()))
def test_what_a_page_says_to_install_brings_what_it_imports(path: Path) -> None:
    """CI has every extra; a reader has the ones the page names (see installs.py)."""
    blocks = [str(example.parsed) for example in python_blocks(path)]
    assert missing_installs(path.read_text(encoding="utf-8"), blocks) == []


def test_the_install_check_catches_an_extra_that_lacks_a_module() -> None:
    """The telemetry page's old gap: the SDK imported, only the API extra named."""
    code = "from opentelemetry import trace\nfrom opentelemetry.sdk.trace import TracerProvider\n"
    problems = missing_installs('pip install "mcp-resilient[otel]"', [code])
    assert problems == [
        "imports opentelemetry.sdk.trace (from opentelemetry-sdk), which the core package "
        "and [otel] named on the page do not install"
    ]
    assert missing_installs('pip install "mcp-resilient[otel-sdk]"', [code]) == []
    assert missing_installs("`[nosuch]`", ["import os"]) == [
        "the page names extras that do not exist: ['nosuch']"
    ]


@pytest.mark.integration
def test_the_quickstart_server_answers_what_the_page_shows(tmp_path: Path) -> None:
    """The quickstart's own server.py gives the result its client block prints."""
    page = REPO_ROOT / "docs" / "quickstart.md"
    server = next(str(e.parsed) for e in python_blocks(page) if "FastMCP(" in str(e.parsed))
    client = next(str(e.parsed) for e in python_blocks(page) if '"add", {"a": 1' in str(e.parsed))
    shown = re.search(r"print\(result\.structured_content\)\n\s*#> (?P<out>.+)", client)
    assert shown is not None
    port = free_port()
    (tmp_path / "server.py").write_text(server.replace("port=8000", f"port={port}"))
    proc = subprocess.Popen(
        [sys.executable, "server.py"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def call() -> Any:
            url = f"http://127.0.0.1:{port}/mcp"
            with anyio.fail_after(60):
                while True:  # until the server listens
                    try:
                        async with ResilientClient(url, timeout=5) as c:
                            return (await c.call_tool("add", {"a": 1, "b": 2})).structured_content
                    except TransportError:
                        await anyio.sleep(0.2)

        assert str(anyio.run(call)) == shown["out"]
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("configure", ["", "import logging; logging.basicConfig()"])
def test_library_warnings_are_silent_until_logging_is_configured(configure: str) -> None:
    """What docs/events.md says: a NullHandler, so stderr stays empty without basicConfig."""
    code = (
        f"{configure}\nimport logging, mcp_resilient\n"
        "logging.getLogger('mcp_resilient').warning('session lost')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert ("session lost" in proc.stderr) == bool(configure), proc.stderr


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
