"""``mcp-call``: probe a remote MCP server from a shell, or call one tool from a script.

``main`` is the console script (``mcp-call``) and ``python -m mcp_resilient``.
Exit codes: 0 success, 1 the tool answered with isError, 2 usage error, 3 could not
reach any endpoint, 4 protocol or server error, 5 outcome unknown.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ._args import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    HelpRequest,
    UsageError,
    parse_args,
)
from ._output import Output

__all__ = ["main"]


def _usage_hint(error: UsageError) -> str:
    topic = f"mcp-call {error.command} --help" if error.command else "mcp-call --help"
    return f"{error} (see '{topic}')"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mcp-call`` with ``argv`` (default: the process's arguments); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = Output()
    try:
        parsed = parse_args(args)
    except UsageError as exc:
        out.error(_usage_hint(exc))
        return EXIT_USAGE
    if isinstance(parsed, HelpRequest):
        out.result(parsed.text)
        return EXIT_OK
    out = Output(json_mode=parsed.json, verbose=parsed.verbose)
    # Imported here so that --help and usage errors stay fast (no HTTP stack needed).
    import anyio

    from ._run import run

    try:
        return anyio.run(run, parsed, out)
    except KeyboardInterrupt:
        out.finish()
        out.error(
            "interrupted"
            + (" (the tool call may or may not have run)" if parsed.command == "call" else "")
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. '| head'): stop quietly, as other shell tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
