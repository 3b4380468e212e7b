"""The docs' Python blocks as Sybil documents: parse, run, check printed output.

The convention is in ``tests/docs/README.md``. Sybil finds the fenced blocks (also those
indented in admonitions) and the ``<!-- snippet: ... -->`` directives, and keeps one
namespace per page; the evaluator here adds what Sybil leaves to us: top-level ``await``,
a deadline per block, blocks that are pytest files, and ``#>`` output checks.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import os
import re
import subprocess
import sys
import threading
import traceback
import unittest
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Example, Region, Sybil
from sybil.parsers.abstract import AbstractCodeBlockParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

from tests.docs.transcripts import match_lines

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Deadline of one block (a whole pytest run for ``snippet: pytest`` blocks).
BLOCK_TIMEOUT = 60.0
#: Time given to closing clients a page left open.
CLEANUP_TIMEOUT = 10.0

_LOGGERS = ("mcp_resilient", "mcp_resilient.wire", "mcp_resilient.server")
_DOC_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(?P<port>800[0-2])(?![0-9])")
_OUTPUT = re.compile(r"^[ \t]*#>(?: (?P<text>.*)|)$")


class SnippetFailed(Exception):
    """A block raised, printed something else than its ``#>`` lines, or ran out of time."""


def doc_pages() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def rewrite_urls(code: str, base_urls: list[str]) -> str:
    """Point the docs' ``http://127.0.0.1:800N`` / ``http://localhost:800N`` at replica N.

    Any path is kept (``/mcp``, ``/health``).
    """
    return _DOC_URL.sub(lambda m: base_urls[int(m["port"]) - 8000], code)


# -- parsing ---------------------------------------------------------------------------


class PythonBlocks(AbstractCodeBlockParser):
    """Fenced ``python`` / ``py`` blocks, with attributes after the language allowed."""

    language = "python"

    def __init__(self, evaluator: Callable[[Example], str | None]) -> None:
        super().__init__(
            [
                FencedCodeBlockLexer(
                    language=r"[^\s`]+(?:[ \t][^\n]*)?",
                    mapping={"language": "arguments", "source": "source"},
                )
            ],
            evaluator=evaluator,
        )

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexers(document):
            if str(region.lexemes["arguments"]).split()[0] in ("python", "py"):
                region.parsed = region.lexemes["source"]
                region.evaluator = self._evaluator
                yield region


@dataclass
class Directive:
    """``<!-- snippet: skip: REASON -->`` or ``<!-- snippet: pytest -->`` above a block."""

    kind: str  # "skip" or "pytest"
    reason: str
    end: int  # where the comment ends in the page


class Directives:
    """Sybil parser for the directives; each applies to the python block right below it."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="snippet", arguments=r".+?")

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.lexer(document):
            body = str(region.lexemes["arguments"]).strip()
            kind, _, reason = body.partition(":")
            kind, reason = kind.strip(), reason.strip()
            if not (kind == "pytest" and not reason) and not (kind == "skip" and reason):
                line = document.text.count("\n", 0, region.start) + 1
                raise ValueError(
                    f"{document.path}:{line}: bad snippet directive {body!r} "
                    "(write 'skip: REASON' or 'pytest'; see tests/docs/README.md)"
                )
            end = document.text.index("-->", region.start) + len("-->")
            region.parsed = Directive(kind, reason, end)
            region.evaluator = _push_directive
            yield region


def _push_directive(example: Example) -> None:
    example.document.push_evaluator(_OneShot(example.parsed))


class _OneShot:
    """Evaluates the example after a directive (Sybil's evaluator stack), once."""

    def __init__(self, directive: Directive) -> None:
        self.directive = directive

    def __call__(self, example: Example) -> str | None:
        example.document.pop_evaluator(self)
        between = example.document.text[self.directive.end : example.start]
        if between.strip() or not isinstance(example.parsed, str):
            raise SnippetFailed(
                f"the snippet directive {self.directive.kind!r} above line {example.line} "
                "must stand right above a python block"
            )
        if self.directive.kind == "skip":
            raise unittest.SkipTest(self.directive.reason)
        runner: PageRunner = example.namespace["__page_runner__"]
        runner.run_pytest_file(example)
        return None


# -- running ---------------------------------------------------------------------------


@dataclass
class _Printed:
    """What ``print`` wrote, by line of the page (only prints called from the page)."""

    filename: str
    by_line: dict[int, list[str]] = field(default_factory=dict)

    def print_function(self) -> Callable[..., None]:
        real_print = print

        def recording_print(*args: Any, **kwargs: Any) -> None:
            real_print(*args, **kwargs)
            if kwargs.get("file") not in (None, sys.stdout):
                return
            sep, end = kwargs.get("sep", " "), kwargs.get("end", "\n")
            text = (" " if sep is None else sep).join(map(str, args)) + (
                "\n" if end is None else end
            )
            frame = inspect.currentframe()
            while frame is not None and frame.f_code.co_filename != self.filename:
                frame = frame.f_back
            if frame is not None:
                self.by_line.setdefault(frame.f_lineno, []).append(text)

        return recording_print


def expected_output(code: str, first_line: int) -> list[tuple[int, int, list[str]]]:
    """Each run of ``#>`` lines: (first and last line of the statement above it, its text).

    The statement is the innermost one that ends on the code line right above the run.
    """
    lines = code.splitlines()
    tree = ast.parse(code)
    statements = [node for node in ast.walk(tree) if isinstance(node, ast.stmt)]
    found: list[tuple[int, int, list[str]]] = []
    i = 0
    while i < len(lines):
        if _OUTPUT.match(lines[i]) is None:
            i += 1
            continue
        start = i
        texts: list[str] = []
        while i < len(lines) and (match := _OUTPUT.match(lines[i])) is not None:
            texts.append(match["text"] or "")
            i += 1
        above = start  # 1-based number of the line above the run, within the block
        ending = [s for s in statements if s.end_lineno == above]
        if not ending:
            raise SnippetFailed(
                f"line {first_line + start}: '#>' lines must follow a statement that prints"
            )
        inner = min(ending, key=lambda s: above - s.lineno)
        found.append((first_line + inner.lineno - 1, first_line + above - 1, texts))
    return found


class PageRunner:
    """Runs one page's blocks in order, in the page's Sybil namespace, on one event loop."""

    def __init__(self, path: Path, base_urls: list[str], tmp_path: Path) -> None:
        self.path = path
        self.base_urls = base_urls
        self.tmp_path = tmp_path
        self.runner = asyncio.Runner()
        self.printed = _Printed(str(path))
        # Pages configure logging (basicConfig, levels): undone after the page.
        self._root_handlers = list(logging.getLogger().handlers)
        self._levels = {name: logging.getLogger(name).level for name in _LOGGERS}

    def document(self) -> Document:
        document = Sybil(parsers=[PythonBlocks(self.evaluate), Directives()]).parse(self.path)
        document.namespace.update(
            {
                "__name__": "__snippet__",
                "__page_runner__": self,
                "print": self.printed.print_function(),
            }
        )
        return document

    def close(self, namespace: dict[str, Any]) -> None:
        from mcp_resilient import ResilientClient

        async def close_clients() -> None:
            for value in list(namespace.values()):
                if isinstance(value, ResilientClient):
                    await value.aclose()

        try:
            self.runner.run(asyncio.wait_for(close_clients(), CLEANUP_TIMEOUT))
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

    # Sybil evaluator of a python block.
    def evaluate(self, example: Example) -> str | None:
        code = rewrite_urls(str(example.parsed), self.base_urls)
        first_line = example.line + 1  # the block's first code line
        try:
            expected = expected_output(code, first_line)
        except SyntaxError as exc:
            raise SnippetFailed(f"does not compile: {exc}") from None
        filename = str(self.path)
        source = "\n" * (first_line - 1) + code  # line numbers are the page's own
        compiled = compile(
            source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        self.printed.by_line.clear()
        if compiled.co_flags & inspect.CO_COROUTINE:
            self._run_async(compiled, example.namespace, filename)
        else:
            self._run_sync(compiled, example.namespace, filename)
        return self._check_output(expected)

    def _check_output(self, expected: list[tuple[int, int, list[str]]]) -> str | None:
        for first, last, texts in expected:
            printed = "".join(
                text
                for line, chunks in sorted(self.printed.by_line.items())
                if first <= line <= last
                for text in chunks
            )
            actual = printed.splitlines()
            if not match_lines(texts, actual):
                return (
                    f"line {first}: the page shows it prints\n"
                    + "\n".join(f"#> {t}" for t in texts)
                    + "\nbut it printed\n"
                    + ("\n".join(f"#> {t}" for t in actual) or "(nothing)")
                )
        return None

    def _run_async(self, compiled: Any, namespace: dict[str, Any], filename: str) -> None:
        async def body() -> None:
            await eval(compiled, namespace)

        try:
            self.runner.run(asyncio.wait_for(body(), BLOCK_TIMEOUT))
        except TimeoutError:
            raise SnippetFailed(f"did not finish within {BLOCK_TIMEOUT:g} s") from None
        except Exception as exc:
            raise SnippetFailed(_snippet_traceback(exc, filename)) from None

    def _run_sync(self, compiled: Any, namespace: dict[str, Any], filename: str) -> None:
        """In a thread of its own: a block may call ``anyio.run``/``asyncio.run`` itself."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                exec(compiled, namespace)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="snippet", daemon=True)
        thread.start()
        thread.join(BLOCK_TIMEOUT)
        if thread.is_alive():
            raise SnippetFailed(f"did not finish within {BLOCK_TIMEOUT:g} s")
        if errors:
            raise SnippetFailed(_snippet_traceback(errors[0], filename))

    def run_pytest_file(self, example: Example) -> None:
        """Write the block to a test file and run pytest on it (the plugin loads itself)."""
        code = rewrite_urls(str(example.parsed), self.base_urls)
        test_file = self.tmp_path / f"test_{self.path.stem}_{example.line}.py"
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


def _snippet_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the first frame in the page on (the runner's frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def run_page(
    path: Path, base_urls: list[str], tmp_path: Path, root: Path = REPO_ROOT
) -> tuple[str | None, list[str]]:
    """Run a page's blocks in order: the failure (or None) and the skipped blocks."""
    page = path.relative_to(root).as_posix()
    runner = PageRunner(path, base_urls, tmp_path)
    try:
        document = runner.document()
    except ValueError as exc:
        return str(exc).replace(str(path), page), []
    examples = [e for e in document if isinstance(e.parsed, str)]
    skipped: list[str] = []
    try:
        for example in document:
            where = f"{page}:{example.line + 1}"
            try:
                example.evaluate()
            except unittest.SkipTest as exc:
                skipped.append(f"{where}: {exc}")
            except SnippetFailed as exc:
                return f"{where}: the block starting here failed:\n{exc}", skipped
            except Exception as exc:  # SybilFailure: the output did not match
                message = getattr(exc, "result", None) or str(exc)
                return f"{where}: the block starting here failed:\n{message}", skipped
    finally:
        runner.close(document.namespace)
    if document.evaluators:
        return f"{page}: a snippet directive at the end has no python block after it", skipped
    if examples and len(skipped) == len(examples):
        return f"{page}: every python block is skipped; at least one must run", skipped
    return None, skipped


def count_python_fences(path: Path) -> int:
    """Python fences counted without Sybil (a cross-check that none goes unparsed)."""
    fence = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*(python|py)\b", re.MULTILINE)
    return len(fence.findall(path.read_text(encoding="utf-8")))


def python_blocks(path: Path) -> list[Example]:
    """The python blocks Sybil finds on a page (nothing runs)."""
    document = Sybil(parsers=[PythonBlocks(lambda e: None), Directives()]).parse(path)
    return [e for e in document if isinstance(e.parsed, str)]
