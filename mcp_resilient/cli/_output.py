"""Where ``mcp-call`` writes: the result on stdout, everything else on stderr.

The one module of the package that writes to the standard streams. With ``--json``
stdout carries exactly one JSON document; progress, server logs, the trace and
error lines always go to stderr so they never mix with a result a script reads.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from typing import IO, Any

from ._format import progress_bar, progress_line

__all__ = ["Output"]

PREFIX = "mcp-call"


class Output:
    """The CLI's streams, with a progress bar that other stderr lines step around."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        verbose: int = 0,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._start = time.perf_counter()
        self._bar_shown = False
        self._json_written = False
        self._last_progress: tuple[float, float | None, str | None] | None = None
        self._waiting: tuple[str, float] | None = None  # (what, seconds) of the ticker

    # -- terminal facts ------------------------------------------------------------

    def stdout_is_tty(self) -> bool:
        return _isatty(self.stdout)

    def stderr_is_tty(self) -> bool:
        return _isatty(self.stderr)

    def width(self) -> int | None:
        """The terminal's width when stdout is one (tables are clipped to it), else None."""
        return shutil.get_terminal_size().columns if self.stdout_is_tty() else None

    # -- stdout --------------------------------------------------------------------

    @property
    def has_document(self) -> bool:
        """Whether the ``--json`` document is out (an error must not add a second one)."""
        return self._json_written

    def result(self, text: str) -> None:
        """Human output."""
        self._clear_bar()
        self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()

    def document(self, value: Any) -> None:
        """The one JSON document of ``--json`` mode (a second one would break parsers)."""
        if self._json_written:
            raise RuntimeError("mcp-call wrote its JSON document twice")
        self._json_written = True
        self._clear_bar()
        self.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        self.stdout.flush()

    def raw(self, data: bytes) -> None:
        """Bytes straight to stdout (a binary resource piped to a file)."""
        self.stdout.flush()
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is None:
            raise RuntimeError("stdout cannot take binary data")
        buffer.write(data)
        buffer.flush()

    # -- stderr --------------------------------------------------------------------

    def _err(self, line: str) -> None:
        self._clear_bar()
        self.stderr.write(line + "\n")
        self.stderr.flush()

    def error(self, message: str) -> None:
        """The one error line: what, where, what to try."""
        self._err(f"{PREFIX}: error: {_one_line(message)}")

    def note(self, message: str) -> None:
        """Something the user should know that is not an error (a failover, a resume)."""
        self._err(f"{PREFIX}: {_one_line(message)}")

    def block(self, text: str) -> None:
        """Several lines for stderr as they are (a tool's error text, a usage message)."""
        self._err(text.rstrip("\n"))

    def server_log(self, level: str, source: str | None, data: Any) -> None:
        text = log_text(data)
        where = f" {source}" if source else ""
        self._err(f"server [{level}]{where}: {text}")

    def trace(self, message: str) -> None:
        """One ``-v`` trace line, stamped with the time since start."""
        if self.verbose:
            self._err(f"[{time.perf_counter() - self._start:8.3f}s] {message}")

    def traceback(self, exc: BaseException) -> None:
        if self.verbose:
            self.block("".join(traceback.format_exception(exc)))

    # -- progress ------------------------------------------------------------------

    def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """A bar redrawn in place on a terminal, plain lines otherwise (and under -v)."""
        if self.stderr_is_tty() and not self.verbose:
            self._last_progress = (progress, total, message)
            self._draw()
        else:
            self._err(progress_line(progress, total, message))

    def elapsed(self, what: str, seconds: float) -> None:
        """How long a call has been waiting, redrawn in place (terminal only, not under -v).

        Without it a call that sends no progress shows nothing at all while it runs.
        """
        if self.stderr_is_tty() and not self.verbose:
            self._waiting = (what, seconds)
            self._draw()

    def _draw(self) -> None:
        width = shutil.get_terminal_size().columns
        clock = f"  {self._waiting[1]:.0f} s" if self._waiting else ""
        if self._last_progress is not None:
            line = progress_bar(*self._last_progress, width - len(clock)) + clock
        else:
            what = self._waiting[0] if self._waiting else ""
            line = f"waiting for {what!r}...{clock}"[: max(10, width - 1)]
        self.stderr.write("\r\x1b[K" + line)
        self.stderr.flush()
        self._bar_shown = True

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self.stderr.write("\r\x1b[K")
            self.stderr.flush()
            self._bar_shown = False

    def finish(self) -> None:
        """Clear the bar or ticker line for good (the call is over)."""
        self._clear_bar()
        self._last_progress = None
        self._waiting = None


def log_text(data: Any) -> str:
    """A log message's data as text: a string as is, ``{"msg": ..., ...}`` as its message."""
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("message", "msg"):
            if isinstance(data.get(key), str):
                rest = {k: v for k, v in data.items() if k != key and v not in (None, "", {}, [])}
                extra = f" {json.dumps(rest, ensure_ascii=False)}" if rest else ""
                return str(data[key]) + extra
    return json.dumps(data, ensure_ascii=False)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _one_line(text: str) -> str:
    return " ".join(text.split())
