"""``mcp-call`` as the official conformance suite's client: ``conformance_wrapper.py <server-url>``.

The suite runs its client as ``<command> <server-url>`` with the scenario's name in
``MCP_CONFORMANCE_SCENARIO``; this maps each scenario to the ``mcp-call`` invocation an
operator would type, and then becomes that process (its exit code is mcp-call's).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCENARIOS: dict[str, list[str]] = {
    "initialize": ["info"],
    "tools_call": ["call", "add_numbers", "a=5", "b=3"],
}


def mcp_call() -> list[str]:
    """The console script next to this interpreter, else ``python -m mcp_resilient``."""
    script = Path(sys.executable).parent / "mcp-call"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mcp_resilient"]


def main(argv: list[str]) -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if len(argv) != 2 or scenario not in SCENARIOS:
        print(
            f"usage: MCP_CONFORMANCE_SCENARIO={{{','.join(SCENARIOS)}}} {argv[0]} <server-url>"
            f" (got scenario {scenario!r})",
            file=sys.stderr,
        )
        return 2
    command = [*mcp_call(), argv[1], *SCENARIOS[scenario], "-v"]
    sys.stderr.flush()
    os.execv(command[0], command)
    return 127  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv))
