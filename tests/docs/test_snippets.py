"""Run the Python blocks of README.md and docs/**/*.md against the example server.

The convention is in ``tests/docs/README.md``. One test per page: its blocks run in order
in one namespace on one event loop, each with a deadline. A failure names the page and the
block's line, and the traceback points into the Markdown file at the right line.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import json
import linecache
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcp_resilient import ResilientClient
from tests.docs.conftest import SKIPPED_PROPERTY
from tests.rig import ServerCluster

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Deadline of one block (a whole pytest run for ``snippet: pytest`` blocks).
BLOCK_TIMEOUT = 60.0
#: Time given to closing clients a page left open.
CLEANUP_TIMEOUT = 10.0

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*snippet:\s*(?P<body>.*?)\s*-->\s*$")
_LOGGERS = ("mcp_resilient", "mcp_resilient.wire", "mcp_resilient.server")
_DOC_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(?P<port>800[0-2])(?![0-9])")


@dataclass(frozen=True)
class Block:
    """One fenced ``python`` block: where it starts and what the line before it says."""

    page: str
    line: int  # 1-based line of the first code line
    code: str
    skip: str | None = None  # the reason, for ``<!-- snippet: skip: reason -->``
    pytest_file: bool = False  # ``<!-- snippet: pytest -->``: a test file, run by pytest

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def doc_pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def parse_blocks(path: Path, root: Path = REPO_ROOT) -> list[Block]:
    """The page's ``python`` blocks, with the ``snippet:`` directive just above each."""
    page = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence = opened["indent"], opened["fence"]
        info = opened["info"].strip().split()
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if info and info[0] in ("python", "py"):
            directive = _directive_before(lines, i, page)
            body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
            blocks.append(
                Block(
                    page=page,
                    line=i + 2,
                    code=textwrap.dedent("\n".join(body)) + "\n",
                    skip=directive[1] if directive and directive[0] == "skip" else None,
                    pytest_file=bool(directive and directive[0] == "pytest"),
                )
            )
        i = end + 1
    return blocks


def _directive_before(lines: list[str], fence_index: int, page: str) -> tuple[str, str] | None:
    """``("skip", reason)`` or ``("pytest", "")`` from the line above the fence, if any."""
    above = fence_index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    found = _DIRECTIVE.match(lines[above]) if above >= 0 else None
    if found is None:
        return None
    body = found["body"]
    if body == "pytest":
        return ("pytest", "")
    kind, _, reason = body.partition(":")
    if kind.strip() == "skip" and reason.strip():
        return ("skip", reason.strip())
    raise ValueError(
        f"{page}:{above + 1}: bad snippet directive {body!r} (see tests/docs/README.md)"
    )


def _pages_with_python() -> Iterator[Any]:
    for path in doc_pages():
        if parse_blocks(path):
            yield pytest.param(path, id=path.relative_to(REPO_ROOT).as_posix())


def rewrite_urls(code: str, base_urls: list[str]) -> str:
    """Point the docs' ``http://127.0.0.1:800N`` / ``http://localhost:800N`` at replica N.

    Any path is kept (``/mcp``, ``/health``).
    """
    return _DOC_URL.sub(lambda m: base_urls[int(m["port"]) - 8000], code)


class SnippetFailed(Exception):
    """A block raised, or did not finish within its deadline."""


def _snippet_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the first frame in the page on (the runner's frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


class PageRunner:
    """Runs one page's blocks in order, in one namespace, on one event loop."""

    def __init__(self, path: Path, base_urls: list[str], tmp_path: Path) -> None:
        self.path = path
        self.base_urls = base_urls
        self.tmp_path = tmp_path
        self.namespace: dict[str, Any] = {"__name__": "__snippet__", "__builtins__": __builtins__}
        self.runner = asyncio.Runner()
        # Pages configure logging (basicConfig, levels): undone after the page.
        self._root_handlers = list(logging.getLogger().handlers)
        self._levels = {name: logging.getLogger(name).level for name in _LOGGERS}

    def close(self) -> None:
        try:
            self.runner.run(asyncio.wait_for(self._close_clients(), CLEANUP_TIMEOUT))
        except Exception:  # cleanup of a page that already failed or passed
            pass
        finally:
            self.runner.close()
            root = logging.getLogger()
            for handler in root.handlers[:]:
                if handler not in self._root_handlers:
                    root.removeHandler(handler)
            for name, level in self._levels.items():
                logging.getLogger(name).setLevel(level)

    async def _close_clients(self) -> None:
        """Close the clients a page opened without ``async with``."""
        for value in list(self.namespace.values()):
            if isinstance(value, ResilientClient):
                await value.aclose()

    def run(self, block: Block) -> None:
        code = rewrite_urls(block.code, self.base_urls)
        if block.pytest_file:
            self._run_pytest(block, code)
            return
        filename = str(self.path)
        # Pad so that line numbers in tracebacks are the Markdown file's own.
        source = "\n" * (block.line - 1) + code
        linecache.checkcache(filename)
        try:
            compiled = compile(
                source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
        except SyntaxError as exc:
            raise SnippetFailed(f"does not compile: {exc}") from None
        if compiled.co_flags & inspect.CO_COROUTINE:
            self._run_async(compiled, filename)
        else:
            self._run_sync(compiled, filename)

    def _run_async(self, compiled: Any, filename: str) -> None:
        async def body() -> None:
            await eval(compiled, self.namespace)

        try:
            self.runner.run(asyncio.wait_for(body(), BLOCK_TIMEOUT))
        except TimeoutError:
            raise SnippetFailed(f"did not finish within {BLOCK_TIMEOUT:g} s") from None
        except Exception as exc:
            raise SnippetFailed(_snippet_traceback(exc, filename)) from None

    def _run_sync(self, compiled: Any, filename: str) -> None:
        """In a thread of its own: a block may call ``anyio.run``/``asyncio.run`` itself."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                exec(compiled, self.namespace)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="snippet", daemon=True)
        thread.start()
        thread.join(BLOCK_TIMEOUT)
        if thread.is_alive():
            raise SnippetFailed(f"did not finish within {BLOCK_TIMEOUT:g} s")
        if errors:
            raise SnippetFailed(_snippet_traceback(errors[0], filename))

    def _run_pytest(self, block: Block, code: str) -> None:
        """Write the block to a test file and run pytest on it (the plugin loads itself)."""
        test_file = self.tmp_path / f"test_{self.path.stem}_{block.line}.py"
        test_file.write_text(code, encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        # pytest-timeout stops a hanging test first, so the report shows where it hung.
        inner_timeout = f"timeout={BLOCK_TIMEOUT / 2:g}"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        try:
            proc = subprocess.run(
                [*command, "-o", inner_timeout, test_file.name],
                cwd=self.tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            partial = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            raise SnippetFailed(
                f"pytest did not finish within {BLOCK_TIMEOUT:g} s:\n{partial}"
            ) from None
        passed = re.search(r"(\d+) passed", proc.stdout)
        if proc.returncode != 0 or passed is None:
            raise SnippetFailed(
                f"pytest on the block exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )


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


def run_page(
    path: Path, base_urls: list[str], tmp_path: Path, root: Path = REPO_ROOT
) -> tuple[str | None, list[str]]:
    """Run a page's blocks in order: the failure (or None) and the skipped blocks."""
    blocks = parse_blocks(path, root)
    skipped = [f"{b.where}: {b.skip}" for b in blocks if b.skip is not None]
    runner = PageRunner(path, base_urls, tmp_path)
    try:
        for block in blocks:
            if block.skip is None:
                try:
                    runner.run(block)
                except SnippetFailed as exc:
                    return f"{block.where}: the block starting here failed:\n{exc}", skipped
    finally:
        runner.close()
    if blocks and len(skipped) == len(blocks):
        return f"{blocks[0].page}: every python block is skipped; at least one must run", skipped
    return None, skipped


def run_page_isolated(
    path: Path, base_urls: list[str], tmp_path: Path
) -> tuple[str | None, list[str]]:
    """``run_page`` in a fresh interpreter, as a reader runs a page.

    Pages set process-wide state a reader sets once at start-up (OpenTelemetry's global
    tracer provider, logging configuration): run in this process, it would leak into the
    pages and tests after them.
    """
    blocks = parse_blocks(path)
    limit = BLOCK_TIMEOUT * max(1, len(blocks)) + CLEANUP_TIMEOUT + 30
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


def test_parse_blocks_reads_directives_and_indented_fences(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n```python\nx = 1\n```\n\n<!-- snippet: skip: needs HAProxy -->\n"
        "```python\nboom()\n```\n\n!!! note\n    ```python\n    y = x + 1\n    ```\n\n"
        "<!-- snippet: pytest -->\n```python\ndef test_a(): pass\n```\n```bash\nls\n```\n",
        encoding="utf-8",
    )
    blocks = [(b.line, b.code, b.skip, b.pytest_file) for b in parse_blocks(page, root=tmp_path)]
    assert blocks == [
        (4, "x = 1\n", None, False),
        (9, "boom()\n", "needs HAProxy", False),
        (14, "y = x + 1\n", None, False),
        (19, "def test_a(): pass\n", None, True),
    ]


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
