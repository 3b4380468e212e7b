"""``SyncResilientClient`` offers what ``ResilientClient`` offers, with the same parameters.

The sync client is a hand-written twin (its signatures are for readers and type checkers);
this keeps a method or parameter added to the async client from being forgotten there.
"""

from __future__ import annotations

import inspect

from mcp_resilient import ResilientClient, SyncResilientClient

# Async-only by nature, or reached through ``SyncResilientClient.async_client``.
ASYNC_ONLY = {"aclose", "retry_policy", "resume_tool", "trust_annotations", "on_resume_failure"}


def _public(cls: type) -> dict[str, object]:
    return {
        name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")
    }


def test_every_public_name_has_a_sync_twin() -> None:
    missing = set(_public(ResilientClient)) - set(_public(SyncResilientClient)) - ASYNC_ONLY
    assert missing == set()


def test_sync_methods_take_the_same_parameters() -> None:
    sync = _public(SyncResilientClient)
    differ = {}
    for name, member in _public(ResilientClient).items():
        if name in ASYNC_ONLY or not inspect.iscoroutinefunction(member):
            continue
        ours = list(inspect.signature(member).parameters)  # type: ignore[arg-type]
        theirs = list(inspect.signature(sync[name]).parameters)  # type: ignore[arg-type]
        if ours != theirs:
            differ[name] = (ours, theirs)
    assert differ == {}
