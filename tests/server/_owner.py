"""A ledger owner in its own process, for the test that SIGKILLs one mid-run.

    python -m tests.server._owner KIND LOCATION PREFIX SCOPE KEY LEASE [transactional]

Claims KEY, prints ``running`` once the tool body started, then blocks until killed.
With ``transactional`` the claim is a transactional run's (it would commit its writes).
"""

from __future__ import annotations

import sys

import anyio

from mcp_resilient.server import Ledger
from mcp_resilient.server._ledger import fingerprint
from tests.server.conftest import open_store


async def main(
    kind: str, location: str, prefix: str, scope: str, key: str, lease: str, mode: str = ""
) -> None:
    ledger = Ledger(open_store(kind, location, prefix), lease=float(lease))
    fp = fingerprint("increment", {"by": 1})

    async def body() -> str:
        print("running", flush=True)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    if mode == "transactional":

        async def run(_record: str | None, _owner: str | None) -> str:
            return await body()

        await ledger.run_transactional(ledger.record_key(scope, key), key, fp, run)
    else:
        await ledger.run(scope, key, fp, body)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:8])
