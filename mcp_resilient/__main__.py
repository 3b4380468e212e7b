"""``python -m mcp_resilient``: the ``mcp-call`` command line."""

import sys

from mcp_resilient.cli import main

if __name__ == "__main__":
    sys.exit(main())
