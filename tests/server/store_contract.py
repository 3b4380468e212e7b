"""The contract every ``Store`` passes: what the kit's session state and ledger rely on.

A new store plugs in with one fixture: subclass ``StoreContract`` and provide ``store``
(an open store with a fresh ``prefix``; the suite closes nothing). ``tests/server/
test_store_contract.py`` runs it against SQLite and a real ``redis-server``:

```python
class TestMyStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        opened = MyStore(..., prefix=f"t{uuid.uuid4().hex[:12]}:")
        yield opened
        await opened.close()
```

Waits are on conditions (a control key expiring proves time passed), never fixed sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import anyio
import pytest

from mcp_resilient.server import Commit, LedgerRecord, Store

__all__ = ["StoreContract"]

BOUND = 20.0
SHORT = 0.3
LONG = 600.0


async def wait_until(predicate: Callable[[], Awaitable[bool]], bound: float = BOUND) -> None:
    with anyio.fail_after(bound):
        while not await predicate():
            await anyio.sleep(0.02)


class StoreContract:
    """Subclass and provide a ``store`` fixture; every test here must pass."""

    pytestmark = pytest.mark.anyio

    @staticmethod
    def session(store: Store) -> str:
        return f"{store.prefix}session:{uuid.uuid4().hex}:"

    async def expired(self, store: Store, key: str) -> None:
        async def gone() -> bool:
            return await store.get(key) is None

        await wait_until(gone)

    async def time_passes(self, store: Store, seconds: float = SHORT) -> None:
        """Wait until a key set now with ``seconds`` of TTL has expired (the store's clock)."""
        control = f"{store.prefix}control:{uuid.uuid4().hex}"
        await store.set(control, "x", ttl=seconds, touch=None)
        await self.expired(store, control)

    # -- key/value -----------------------------------------------------------------

    async def test_ping(self, store: Store) -> None:
        await store.ping()
        assert isinstance(store.name, str) and store.name
        assert isinstance(store, Store)

    async def test_get_set_delete(self, store: Store) -> None:
        key = f"{store.prefix}k:{uuid.uuid4().hex}"
        assert await store.get(key) is None
        await store.set(key, "v1", ttl=None, touch=None)
        assert await store.get(key) == "v1"
        await store.set(key, "v2", ttl=LONG, touch=None)
        assert await store.get(key) == "v2"
        await store.delete(key)
        assert await store.get(key) is None
        await store.delete(key)  # deleting nothing is fine

    async def test_incr_and_append(self, store: Store) -> None:
        prefix = self.session(store)
        assert await store.incr(prefix + "n", 2, ttl=LONG, touch=prefix) == 2
        assert await store.incr(prefix + "n", 3, ttl=LONG, touch=prefix) == 5
        assert await store.get(prefix + "n") == "5"
        assert await store.get_list(prefix + "l") == []
        assert await store.append(prefix + "l", "a", ttl=LONG, touch=prefix) == 1
        assert await store.append(prefix + "l", "b", ttl=LONG, touch=prefix) == 2
        assert await store.get_list(prefix + "l") == ["a", "b"]

    async def test_ttl_expires_keys(self, store: Store) -> None:
        prefix = self.session(store)
        await store.set(prefix + "a", "1", ttl=SHORT, touch=prefix)
        await store.incr(prefix + "n", 1, ttl=SHORT, touch=prefix)
        await self.expired(store, prefix + "a")
        await self.expired(store, prefix + "n")
        # An expired counter starts again from zero.
        assert await store.incr(prefix + "n", 1, ttl=LONG, touch=prefix) == 1

    async def test_touch_slides_every_key_of_the_prefix(self, store: Store) -> None:
        prefix = self.session(store)
        await store.set(prefix + "a", "1", ttl=SHORT, touch=prefix)
        await store.append(prefix + "l", "x", ttl=SHORT, touch=prefix)
        # A later write under the prefix gives all its keys the new TTL.
        await store.incr(prefix + "n", 1, ttl=LONG, touch=prefix)
        await self.time_passes(store)
        assert await store.get(prefix + "a") == "1"
        assert await store.get_list(prefix + "l") == ["x"]

    async def test_touch_never_revives_an_expired_key(self, store: Store) -> None:
        prefix = self.session(store)
        await store.set(prefix + "old", "1", ttl=SHORT, touch=prefix)
        await self.expired(store, prefix + "old")
        await store.set(prefix + "new", "2", ttl=LONG, touch=prefix)
        assert await store.get(prefix + "old") is None
        assert await store.get(prefix + "new") == "2"

    async def test_touch_stays_within_its_prefix(self, store: Store) -> None:
        mine, other = self.session(store), self.session(store)
        await store.set(other + "a", "1", ttl=SHORT, touch=other)
        await store.set(mine + "a", "1", ttl=LONG, touch=mine)
        await self.expired(store, other + "a")

    async def test_set_if_absent_is_the_owner_marker(self, store: Store) -> None:
        prefix = self.session(store)
        marker = prefix + "__owner__"
        assert await store.set_if_absent(marker, "alice", ttl=LONG, touch=prefix) is None
        assert await store.set_if_absent(marker, "bob", ttl=LONG, touch=prefix) == "alice"
        assert await store.get(marker) == "alice"

    async def test_owner_marker_expires_and_slides_with_its_prefix(self, store: Store) -> None:
        prefix = self.session(store)
        marker = prefix + "__owner__"
        assert await store.set_if_absent(marker, "alice", ttl=SHORT, touch=prefix) is None
        await store.set(prefix + "a", "1", ttl=LONG, touch=prefix)
        await self.time_passes(store)
        assert await store.get(marker) == "alice"  # slid by the later write
        # Once the whole prefix has expired, the marker is free again.
        await store.set(prefix + "a", "1", ttl=SHORT, touch=prefix)
        await self.expired(store, marker)
        assert await store.set_if_absent(marker, "bob", ttl=LONG, touch=prefix) is None
        assert await store.get(marker) == "bob"

    async def test_copy_prefix_replaces_the_target(self, store: Store) -> None:
        old, new = self.session(store), self.session(store)
        await store.set(old + "a", "1", ttl=LONG, touch=old)
        await store.append(old + "l", "x", ttl=LONG, touch=old)
        await store.set(new + "stale", "0", ttl=LONG, touch=new)
        assert await store.copy_prefix(old, new, ttl=LONG) == 2
        assert await store.get(new + "a") == "1"
        assert await store.get_list(new + "l") == ["x"]
        assert await store.get(new + "stale") is None
        assert await store.get(old + "a") == "1"  # a copy, not a move

    async def test_copied_keys_slide_with_their_new_prefix(self, store: Store) -> None:
        old, new = self.session(store), self.session(store)
        await store.set(old + "a", "1", ttl=LONG, touch=old)
        assert await store.copy_prefix(old, new, ttl=SHORT) == 1
        await store.set(new + "b", "2", ttl=LONG, touch=new)
        await self.time_passes(store)
        assert await store.get(new + "a") == "1"

    async def test_copy_prefix_skips_expired_keys(self, store: Store) -> None:
        old, new = self.session(store), self.session(store)
        await store.set(old + "gone", "1", ttl=SHORT, touch=None)
        await self.expired(store, old + "gone")
        assert await store.copy_prefix(old, new, ttl=LONG) == 0
        assert await store.get(new + "gone") is None

    # -- the ledger ------------------------------------------------------------------

    def record(self, store: Store) -> str:
        return f"{store.prefix}idem:scope:{uuid.uuid4().hex}"

    async def test_claim_is_first_come(self, store: Store) -> None:
        key = self.record(store)
        assert await store.read(key) is None
        assert await store.claim(key, "A", "fp", lease=LONG, ttl=LONG) is None
        seen = await store.claim(key, "B", "fp2", lease=LONG, ttl=LONG)
        assert isinstance(seen, LedgerRecord)
        assert (seen.state, seen.fingerprint, seen.outcome) == ("running", "fp", None)
        assert 0 < seen.lease_left <= LONG
        again = await store.read(key)
        assert again is not None and (again.state, again.fingerprint) == ("running", "fp")

    async def test_lease_renew_and_release(self, store: Store) -> None:
        key = self.record(store)
        assert await store.claim(key, "A", "fp", lease=SHORT, ttl=LONG) is None

        async def lapsed() -> bool:
            record = await store.read(key)
            return record is not None and record.lease_left <= 0

        await wait_until(lapsed)
        assert await store.renew(key, "A", lease=LONG)
        record = await store.read(key)
        assert record is not None and record.lease_left > SHORT
        assert not await store.renew(key, "B", lease=LONG)  # not B's
        await store.release(key, "B")  # ignored: not B's
        record = await store.read(key)
        assert record is not None and record.lease_left > 0
        await store.release(key, "A")
        await wait_until(lapsed)
        record = await store.read(key)
        assert record is not None and record.state == "running"  # never finished

    async def test_complete_stores_the_outcome(self, store: Store) -> None:
        key = self.record(store)
        assert await store.claim(key, "A", "fp", lease=LONG, ttl=LONG) is None
        assert not await store.complete(key, "B", "nope", ttl=LONG)
        assert await store.complete(key, "A", '{"n": 1}', ttl=LONG)
        record = await store.read(key)
        assert record is not None
        assert (record.state, record.fingerprint, record.outcome) == ("done", "fp", '{"n": 1}')
        assert not await store.renew(key, "A", lease=LONG)  # done is done
        seen = await store.claim(key, "C", "fp", lease=LONG, ttl=LONG)
        assert seen is not None and seen.outcome == '{"n": 1}'

    async def test_forget_drops_only_the_owners_running_record(self, store: Store) -> None:
        key = self.record(store)
        assert await store.claim(key, "A", "fp", lease=LONG, ttl=LONG) is None
        assert not await store.forget(key, "B")
        assert await store.read(key) is not None
        assert await store.forget(key, "A")
        assert await store.read(key) is None
        assert await store.claim(key, "B", "fp", lease=LONG, ttl=LONG) is None
        assert await store.complete(key, "B", "x", ttl=LONG)
        assert not await store.forget(key, "B")  # an outcome is never dropped
        record = await store.read(key)
        assert record is not None and record.outcome == "x"

    async def test_records_expire_after_their_ttl(self, store: Store) -> None:
        key = self.record(store)
        assert await store.claim(key, "A", "fp", lease=SHORT, ttl=SHORT) is None
        assert await store.complete(key, "A", "x", ttl=SHORT)

        async def gone() -> bool:
            return await store.read(key) is None

        await wait_until(gone)
        assert await store.claim(key, "B", "fp", lease=LONG, ttl=LONG) is None

    async def test_a_running_record_lives_at_least_its_lease(self, store: Store) -> None:
        key = self.record(store)
        assert await store.claim(key, "A", "fp", lease=LONG, ttl=SHORT) is None
        await self.time_passes(store)
        record = await store.read(key)
        assert record is not None and record.state == "running"

    # -- transactional commits ---------------------------------------------------

    async def test_commit_applies_everything_or_nothing(self, store: Store) -> None:
        state = self.session(store)
        record = f"{state}__idem__:s:{uuid.uuid4().hex}"
        assert await store.claim(record, "me", "fp", lease=5, ttl=60, transactional=True) is None
        await store.set(state + "n", "1", ttl=60, touch=state)
        await store.append(state + "list", "a", ttl=60, touch=state)
        stale = Commit(
            expect={state + "n": "0"},
            writes={state + "n": "2"},
            ttl=60,
            touch=state,
            record=record,
            owner="me",
            outcome="out",
            record_ttl=60,
        )
        assert await store.commit(stale) == "conflict"
        assert await store.get(state + "n") == "1"
        assert (await store.read(record)).state == "running"  # type: ignore[union-attr]
        good = Commit(
            expect={state + "n": "1", state + "list": ("a",), state + "absent": None},
            writes={state + "n": "2", state + "list": ("a", "b"), state + "new": "x"},
            ttl=60,
            touch=state,
            record=record,
            owner="me",
            outcome="out",
            record_ttl=60,
        )
        assert await store.commit(good) == "committed"
        assert await store.get(state + "n") == "2"
        assert await store.get_list(state + "list") == ["a", "b"]
        assert await store.get(state + "new") == "x"
        done = await store.read(record)
        assert done is not None and done.state == "done" and done.outcome == "out"
        assert done.transactional
        # The record is done: nobody commits under it again.
        assert await store.commit(good) == "lost"

    async def test_commit_by_another_owner_is_lost(self, store: Store) -> None:
        state = self.session(store)
        record = f"{state}__idem__:s:{uuid.uuid4().hex}"
        await store.claim(record, "me", "fp", lease=5, ttl=60, transactional=True)
        commit = Commit(writes={state + "n": "1"}, record=record, owner="other", outcome="x")
        assert await store.commit(commit) == "lost"
        assert await store.get(state + "n") is None

    async def test_unkeyed_commit_and_deletes(self, store: Store) -> None:
        state = self.session(store)
        await store.set(state + "gone", "1", ttl=None, touch=state)
        commit = Commit(expect={state + "gone": "1"}, writes={state + "gone": None}, touch=state)
        assert await store.commit(commit) == "committed"
        assert await store.get(state + "gone") is None

    async def test_claim_takes_over_a_dead_transactional_run_only(self, store: Store) -> None:
        key = f"{store.prefix}idem:s:{uuid.uuid4().hex}"
        assert await store.claim(key, "dead", "fp", lease=5, ttl=60, transactional=True) is None
        # Lease alive: nobody takes it over.
        alive = await store.claim(key, "b", "fp", lease=5, ttl=60, transactional=True)
        assert alive is not None and alive.transactional and alive.lease_left > 0
        await store.release(key, "dead")  # the owner is gone: its lease ends now
        # Not for a non-transactional claimant, nor for another fingerprint.
        assert await store.claim(key, "c", "fp", lease=5, ttl=60) is not None
        assert await store.claim(key, "d", "other", lease=5, ttl=60, transactional=True) is not None
        assert await store.claim(key, "e", "fp", lease=5, ttl=60, transactional=True) is None
        # The old owner's late commit is refused: it wrote nothing.
        assert await store.commit(Commit(record=key, owner="dead", outcome="x")) == "lost"
        assert await store.commit(Commit(record=key, owner="e", outcome="y")) == "committed"

    async def test_a_committed_record_travels_with_its_state(self, store: Store) -> None:
        """resume_session copies the state and the records committed with it, at once."""
        old = self.session(store)
        new = self.session(store)
        record = f"{old}__idem__:s:k"
        await store.claim(record, "me", "fp", lease=5, ttl=60, transactional=True)
        commit = Commit(
            writes={old + "n": "1"},
            ttl=60,
            touch=old,
            record=record,
            owner="me",
            outcome="o",
            record_ttl=60,
        )
        assert await store.commit(commit) == "committed"
        await store.copy_prefix(old, new, ttl=60)
        copied = await store.read(f"{new}__idem__:s:k")
        assert copied is not None and copied.state == "done" and copied.outcome == "o"
        assert await store.get(new + "n") == "1"

    async def test_commit_slides_its_state_ttl_only(self, store: Store) -> None:
        state = self.session(store)
        outside = f"{store.prefix}other:{uuid.uuid4().hex}"
        await store.set(state + "old", "1", ttl=LONG, touch=state)
        commit = Commit(writes={state + "n": "1", outside: "x"}, ttl=SHORT, touch=state)
        assert await store.commit(commit) == "committed"
        await self.expired(store, state + "old")  # slid to the commit's TTL
        await self.expired(store, state + "n")
        assert await store.get(outside) == "x"  # outside the state: no TTL
