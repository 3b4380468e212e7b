"""The kit's store in Redis (``redis.asyncio``): what replicas behind a balancer share.

The ledger's steps are Lua scripts, so each is one atomic step on the server and leases
are measured on Redis's clock (``TIME``), never on the replicas' own clocks. A session's
keys are indexed in a set so one write can slide the TTL of all of them.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ._store import Commit, CommitResult, LedgerRecord, StateValue, StoreError, redact_url

__all__ = ["RedisStore"]

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS[1] record; ARGV owner, fingerprint, lease ms, ttl ms, transactional ('1' or '0').
# A transactional claimant takes over a transactional record that is still running after
# its lease ended (the dead owner committed nothing).
_CLAIM = (
    _NOW_MS
    + """
local r = redis.call('HMGET', KEYS[1], 'state', 'fp', 'lease_until', 'outcome', 'tx')
if r[1] and not (ARGV[5] == '1' and r[5] == '1' and r[1] == 'running' and r[2] == ARGV[2]
                 and (tonumber(r[3]) or 0) <= now) then
  return {r[1], r[2] or '', tostring((tonumber(r[3]) or 0) - now), r[4] or false, r[5] or '0'}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1], 'fp', ARGV[2],
           'lease_until', now + tonumber(ARGV[3]), 'tx', ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[4]), tonumber(ARGV[3])))
return {}
"""
)
_READ = (
    _NOW_MS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local r = redis.call('HMGET', KEYS[1], 'state', 'fp', 'lease_until', 'outcome', 'tx')
return {r[1] or 'running', r[2] or '', tostring((tonumber(r[3]) or 0) - now), r[4] or false,
        r[5] or '0'}
"""
)
# KEYS[1] record (or any key when there is none), KEYS[2] the touch prefix's index, then
# n keys to check and the keys to write. ARGV: has record, owner, outcome, record ttl ms,
# ttl ms (0: none), touch prefix ('' none), n, then a (kind, payload) pair per key:
# kind 'n' absent, 's' a string, 'l' a list (payload: a JSON array of strings).
_COMMIT = """
if ARGV[1] == '1' then
  local r = redis.call('HMGET', KEYS[1], 'owner', 'state')
  if r[1] ~= ARGV[2] or r[2] ~= 'running' then return 'lost' end
end
local n = tonumber(ARGV[7])
local a = 8
for i = 1, n do
  local key, kind, payload = KEYS[2 + i], ARGV[a], ARGV[a + 1]
  a = a + 2
  local t = redis.call('TYPE', key)['ok']
  local ok
  if kind == 'n' then ok = t == 'none'
  elseif kind == 's' then ok = t == 'string' and redis.call('GET', key) == payload
  else
    local items = cjson.decode(payload)
    if t == 'none' then ok = #items == 0
    elseif t ~= 'list' then ok = false
    else
      local have = redis.call('LRANGE', key, 0, -1)
      ok = #have == #items
      for j = 1, #items do
        if not ok then break end
        ok = have[j] == items[j]
      end
    end
  end
  if not ok then return 'conflict' end
end
local ttl, touch = tonumber(ARGV[5]), ARGV[6]
for i = 3 + n, #KEYS do
  local key, kind, payload = KEYS[i], ARGV[a], ARGV[a + 1]
  a = a + 2
  if kind == 's' then redis.call('SET', key, payload)
  else
    redis.call('DEL', key)
    if kind == 'l' then
      local items = cjson.decode(payload)
      for j = 1, #items, 1000 do
        redis.call('RPUSH', key, unpack(items, j, math.min(j + 999, #items)))
      end
    end
  end
  if touch ~= '' and string.sub(key, 1, #touch) == touch then
    redis.call('SADD', KEYS[2], string.sub(key, #touch + 1))
  end
end
if ttl > 0 and touch ~= '' and #KEYS > 2 + n then
  for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    redis.call('PEXPIRE', touch .. name, ttl)
  end
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
  if touch ~= '' and string.sub(KEYS[1], 1, #touch) == touch then
    redis.call('SADD', KEYS[2], string.sub(KEYS[1], #touch + 1))
  end
end
return 'committed'
"""
# KEYS[1] record; ARGV owner, lease ms (0: end the lease now).
_RENEW = (
    _NOW_MS
    + """
local r = redis.call('HMGET', KEYS[1], 'owner', 'state')
if r[1] ~= ARGV[1] or r[2] ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 1
"""
)
# KEYS[1] record; ARGV owner, outcome, ttl ms.
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
# KEYS[1] record; ARGV owner. Deletes the owner's running record.
_FORGET = """
local r = redis.call('HMGET', KEYS[1], 'owner', 'state')
if r[1] ~= ARGV[1] or r[2] ~= 'running' then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
# KEYS[1] the session's key index; ARGV ttl ms, key prefix. Slides every key's TTL.
_TOUCH = """
local ttl = tonumber(ARGV[1])
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('PEXPIRE', ARGV[2] .. name, ttl)
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""
# KEYS[1] key, KEYS[2] its prefix's index; ARGV value, ttl ms (0: none), suffix, prefix.
_SET_IF_ABSENT = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[3])
  if ttl > 0 then
    for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
      redis.call('PEXPIRE', ARGV[4] .. name, ttl)
    end
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
elseif ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return false
"""
# KEYS[1] old index, KEYS[2] new index; ARGV old prefix, new prefix, ttl ms (0: none).
_COPY = """
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. name)
end
redis.call('DEL', KEYS[2])
local copied = 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('COPY', ARGV[1] .. name, ARGV[2] .. name, 'REPLACE') == 1 then
    redis.call('SADD', KEYS[2], name)
    if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', ARGV[2] .. name, tonumber(ARGV[3])) end
    copied = copied + 1
  end
end
if copied > 0 and tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3])) end
return copied
"""

#: The index of a prefix's keys lives at ``{prefix}__keys__`` (a set of key suffixes).
INDEX_SUFFIX = "__keys__"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    """The store in Redis. ``url`` is a ``redis://`` URL; ``prefix`` isolates deployments.

    Session keys are ``{prefix}session:{id}:{key}`` (``mcp:session:{id}:{key}`` by default,
    the layout of the reference HAProxy + Redis deployment); ledger records are hashes
    at ``{prefix}idem:{scope}:{key}``.
    """

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "mcp:", socket_timeout: float = 5.0) -> None:
        self.url = url
        self.where = redact_url(url)
        """The URL without its password, for messages."""
        self.prefix = prefix
        self._redis: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._read = self._redis.register_script(_READ)
        self._renew = self._redis.register_script(_RENEW)
        self._complete = self._redis.register_script(_COMPLETE)
        self._copy = self._redis.register_script(_COPY)
        self._commit = self._redis.register_script(_COMMIT)
        self._set_if_absent = self._redis.register_script(_SET_IF_ABSENT)
        self._forget = self._redis.register_script(_FORGET)

    async def _do(self, what: str, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            # Neither the URL's password nor the key (it may hold an idempotency key).
            raise StoreError(f"Redis store {self.where}: {what} failed: {exc}") from exc

    @staticmethod
    def _split(key: str, touch: str | None) -> str | None:
        """The key's suffix under ``touch`` (for the index), or None."""
        if touch is None or not key.startswith(touch):
            return None
        return key[len(touch) :]

    async def _write(self, key: str, ttl: float | None, touch: str | None, op: Any) -> Any:
        async with self._redis.pipeline(transaction=True) as pipe:
            op(pipe)
            suffix = self._split(key, touch)
            if suffix is not None and touch is not None:
                pipe.sadd(touch + INDEX_SUFFIX, suffix)
                if ttl is not None:
                    pipe.eval(_TOUCH, 1, touch + INDEX_SUFFIX, _ms(ttl), touch)
            elif ttl is not None:
                pipe.pexpire(key, _ms(ttl))
            results = await self._do("write", pipe.execute())
        return results[0]

    async def ping(self) -> None:
        await self._do("PING", self._redis.ping())

    async def get(self, key: str) -> str | None:
        value = await self._do("GET", self._redis.get(key))
        return None if value is None else str(value)

    async def set(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> None:
        await self._write(key, ttl, touch, lambda pipe: pipe.set(key, value))

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None, touch: str | None
    ) -> str | None:
        suffix = self._split(key, touch)
        index = (touch or key) + INDEX_SUFFIX
        args: list[str | int] = [value, 0 if ttl is None else _ms(ttl), suffix or "", touch or ""]
        current = await self._do("set-if-absent", self._set_if_absent(keys=[key, index], args=args))
        return None if current is None else str(current)

    async def incr(self, key: str, by: int, *, ttl: float | None, touch: str | None) -> int:
        return int(await self._write(key, ttl, touch, lambda pipe: pipe.incrby(key, by)))

    async def append(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> int:
        return int(await self._write(key, ttl, touch, lambda pipe: pipe.rpush(key, value)))

    async def get_list(self, key: str) -> list[str]:
        items = await self._do("LRANGE", self._redis.lrange(key, 0, -1))
        return [str(item) for item in items]

    async def delete(self, key: str) -> None:
        await self._do("DEL", self._redis.delete(key))

    async def copy_prefix(self, old: str, new: str, *, ttl: float | None) -> int:
        keys = [old + INDEX_SUFFIX, new + INDEX_SUFFIX]
        args: list[str | int] = [old, new, 0 if ttl is None else _ms(ttl)]
        return int(await self._do("copy", self._copy(keys=keys, args=args)))

    # -- the ledger --------------------------------------------------------------------

    @staticmethod
    def _record(raw: list[Any]) -> LedgerRecord | None:
        if not raw:
            return None
        state, fingerprint, lease_left_ms, outcome, tx = raw
        return LedgerRecord(
            state="done" if state == "done" else "running",
            fingerprint=str(fingerprint),
            lease_left=float(lease_left_ms) / 1000,
            outcome=None if outcome is None else str(outcome),
            transactional=tx == "1",
        )

    async def claim(
        self,
        key: str,
        owner: str,
        fingerprint: str,
        *,
        lease: float,
        ttl: float,
        transactional: bool = False,
    ) -> LedgerRecord | None:
        tx = "1" if transactional else "0"
        args: list[str | int] = [owner, fingerprint, _ms(lease), _ms(ttl), tx]
        raw = await self._do("claim", self._claim(keys=[key], args=args))
        return self._record(raw)

    async def read(self, key: str) -> LedgerRecord | None:
        return self._record(await self._do("read", self._read(keys=[key])))

    async def renew(self, key: str, owner: str, *, lease: float) -> bool:
        return bool(await self._do("renew", self._renew(keys=[key], args=[owner, _ms(lease)])))

    async def release(self, key: str, owner: str) -> None:
        # A lease that ends now (the record's own TTL is left as it is).
        await self._do("release", self._renew(keys=[key], args=[owner, 0]))

    async def complete(self, key: str, owner: str, outcome: str, *, ttl: float) -> bool:
        return bool(
            await self._do("complete", self._complete(keys=[key], args=[owner, outcome, _ms(ttl)]))
        )

    async def commit(self, commit: Commit) -> CommitResult:
        touch = commit.touch or ""
        first = commit.record or next(iter(commit.writes), None) or next(iter(commit.expect), "")
        keys: list[str] = [first, (touch or first) + INDEX_SUFFIX]
        args: list[str | int | float] = [
            "1" if commit.record is not None else "0",
            commit.owner,
            commit.outcome,
            _ms(commit.record_ttl),
            0 if commit.ttl is None else _ms(commit.ttl),
            touch,
            len(commit.expect),
        ]
        for part in (commit.expect, commit.writes):
            for key, value in part.items():
                keys.append(key)
                args.extend(_encode(value))
        result = await self._do("commit", self._commit(keys=keys, args=args))
        if result not in ("committed", "conflict", "lost"):
            raise StoreError(f"Redis store {self.where}: commit answered {result!r}")
        return result  # type: ignore[no-any-return]

    async def forget(self, key: str, owner: str) -> bool:
        return bool(await self._do("forget", self._forget(keys=[key], args=[owner])))

    async def close(self) -> None:
        await self._redis.aclose()


def _encode(value: StateValue) -> tuple[str, str]:
    """A value for the commit script: (kind, payload)."""
    if value is None:
        return "n", ""
    if isinstance(value, str):
        return "s", value
    return "l", json.dumps(list(value), ensure_ascii=False)
