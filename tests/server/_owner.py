"""A ledger owner in its own process, for the test that SIGKILLs one mid-run.

    python -m tests.server._owner KIND LOCATION PREFIX SCOPE KEY LEASE

Claims KEY, prints ``running`` once the tool body started, then blocks until killed.
"""

from __future__ import annotations

import sys

import anyio

from mcp_resilient.server import Ledger
from mcp_resilient.server._ledger import fingerprint
from tests.server.conftest import open_store


async def main(kind: str, location: str, prefix: str, scope: str, key: str, lease: str) -> None:
    ledger = Ledger(open_store(kind, location, prefix), lease=float(lease))

    async def body() -> str:
        print("running", flush=True)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    await ledger.run(scope, key, fingerprint("increment", {"by": 1}), body)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:7])
