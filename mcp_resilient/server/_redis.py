"""The kit's store in Redis (``redis.asyncio``): what replicas behind a balancer share.

One class for a single Redis, a Sentinel-managed primary and a Redis Cluster. Every
write is one Lua script, so each is one atomic step on the server, and leases are
measured on Redis's clock (``TIME``), never on the replicas' own clocks. A session's
keys are indexed in a set so one write can slide the TTL of all of them.

In a cluster, hash tags keep each session's keys (and their index) in one slot, and
each ledger record in a slot of its own, so no script ever touches two slots. With
``wait_replicas``, every write is followed by ``WAIT`` on the same connection: the store
acknowledges it only once that many replicas have it (see docs/stores.md).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from ._store import (
    Commit,
    CommitResult,
    LedgerRecord,
    NotReplicatedError,
    StateValue,
    StoreError,
    redact_url,
)

__all__ = ["DEFAULT_WAIT_TIMEOUT", "RedisStore"]

#: Seconds ``WAIT`` waits for the replicas before the write counts as not replicated.
DEFAULT_WAIT_TIMEOUT = 1.0
#: How often a write follows a cluster redirect (MOVED) before giving up.
_MAX_REDIRECTS = 3

_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
_RECORD = """
local r = redis.call('HMGET', KEYS[1], 'state', 'fp', 'lease_until', 'outcome', 'tx')
return {r[1] or 'running', r[2] or '', tostring((tonumber(r[3]) or 0) - now), r[4] or false,
        r[5] or '0'}
"""

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
_READ = _NOW_MS + "if redis.call('EXISTS', KEYS[1]) == 0 then return {} end " + _RECORD
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
# KEYS[1] record; ARGV owner, lease ms (1: end the lease now).
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
# KEYS[1] record; ARGV owner. Undo a claim that could not be replicated.
_UNCLAIM = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
# KEYS[1] key, KEYS[2] the session's key index (optional); ARGV op, value, ttl ms (0:
# none), the key's name in the index, the index's key prefix. Slides every key's TTL.
_WRITE = """
local op, r = ARGV[1], 1
if op == 'setnx' then
  local current = redis.call('GET', KEYS[1])
  if current then return current end
  redis.call('SET', KEYS[1], ARGV[2])
  r = false
elseif op == 'set' then redis.call('SET', KEYS[1], ARGV[2])
elseif op == 'incr' then r = redis.call('INCRBY', KEYS[1], tonumber(ARGV[2]))
elseif op == 'rpush' then r = redis.call('RPUSH', KEYS[1], ARGV[2])
else r = redis.call('DEL', KEYS[1]) end
local ttl = tonumber(ARGV[3])
if #KEYS > 1 then
  redis.call('SADD', KEYS[2], ARGV[4])
  if ttl > 0 then
    for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
      redis.call('PEXPIRE', ARGV[5] .. name, ttl)
    end
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
elseif ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return r
"""
# KEYS[1] old index, KEYS[2] new index (one slot); ARGV old prefix, new prefix, ttl ms.
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
# Cluster: the two sessions live in two slots, so the copy is a read in the old slot...
# KEYS[1] old index; ARGV old prefix. Returns JSON [[name, type, value], ...].
_DUMP = """
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. name
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'string' then table.insert(out, {name, 'string', redis.call('GET', key)})
  elseif kind == 'list' then table.insert(out, {name, 'list', redis.call('LRANGE', key, 0, -1)})
  elseif kind == 'hash' then table.insert(out, {name, 'hash', redis.call('HGETALL', key)})
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""
# ...and one atomic replace in the new slot. KEYS[1] new index; ARGV new prefix, ttl ms, JSON.
_RESTORE = """
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. name)
end
redis.call('DEL', KEYS[1])
local ttl = tonumber(ARGV[2])
local entries = cjson.decode(ARGV[3])
for _, e in ipairs(entries) do
  local key = ARGV[1] .. e[1]
  if e[2] == 'string' then redis.call('SET', key, e[3])
  elseif e[2] == 'hash' then redis.call('HSET', key, unpack(e[3]))
  elseif #e[3] > 0 then redis.call('RPUSH', key, unpack(e[3])) end
  redis.call('SADD', KEYS[1], e[1])
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
if #entries > 0 and ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return #entries
"""

#: The index of a prefix's keys lives at ``{prefix}__keys__`` (a set of key suffixes).
INDEX_SUFFIX = "__keys__"

Mode = Literal["single", "sentinel", "cluster"]
#: Key scopes whose next segment names one client's state (the handshake era's session,
#: the 2026-07-28 era's state id): hash-tagged so all of its keys share a slot.
_STATE_SCOPES = ("session:", "state:")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: Any) -> Any:
    """Answers as text, also from a client built without ``decode_responses``."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_text(item) for item in value]
    return value


def _hosts(netloc: str, default_port: int) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """``user:pass@h1:p1,h2:p2`` as credentials and (host, port) pairs."""
    creds: dict[str, str] = {}
    userinfo, _, hostlist = netloc.rpartition("@")
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            creds["username"] = unquote(user)
        if password:
            creds["password"] = unquote(password)
    hosts: list[tuple[str, int]] = []
    for item in filter(None, hostlist.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        hosts.append((host or item, int(port) if port else default_port))
    if not hosts:
        raise ValueError(f"no host in {netloc!r}")
    return creds, hosts


def _wait_options(url: str, replicas: int | None, timeout: float) -> tuple[str, int | None, float]:
    """``?wait_replicas=N&wait_timeout=S`` in the URL (for deployments configured by URL);
    explicit arguments win. The two are taken out of the URL the driver sees."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "wait_replicas":
            replicas = int(value) if replicas is None else replicas
        elif name == "wait_timeout":
            timeout = float(value) if timeout == DEFAULT_WAIT_TIMEOUT else timeout
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), replicas, timeout


class RedisStore:
    """The store in Redis: one server, a Sentinel-managed primary, or a Redis Cluster.

    ``url`` is a ``redis://`` / ``rediss://`` URL (one server; add ``cluster=True`` for a
    cluster), ``redis+cluster://h1:p1,h2:p2`` (a cluster: any of its nodes),
    ``redis+sentinel://h1:p1,h2:p2/service[/db]`` (the primary Sentinel names), or a client
    you built (``redis.asyncio.Redis``, ``RedisCluster``, ``Sentinel.master_for(...)``).

    Key layout: session keys are ``{prefix}session:{id}:{key}`` and ledger records hashes
    at ``{prefix}idem:{scope}:{key}``. With ``hash_tags`` (on by default in a cluster, off
    otherwise, so single-server deployments keep their key names) the session id and the
    ledger record name become hash tags: ``mcp:session:{abc}:counter`` (and
    ``mcp:state:{id}:counter``), ``mcp:idem:{s:k}``.

    ``wait_replicas``: every write waits (``WAIT``) until that many replicas have it, at
    most ``wait_timeout`` seconds, and fails with ``NotReplicatedError`` otherwise. Default:
    1 for Sentinel and cluster (they exist to have replicas), 0 for one server. A URL may
    carry both (``?wait_replicas=0&wait_timeout=0.5``); arguments given here win.
    """

    name = "redis"

    def __init__(
        self,
        url: str | Redis | RedisCluster,
        *,
        prefix: str = "mcp:",
        socket_timeout: float = 5.0,
        cluster: bool | None = None,
        hash_tags: bool | None = None,
        wait_replicas: int | None = None,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> None:
        self.prefix = prefix
        self.url: str | None = None
        """The URL given (None for a client you built); Redis event stores use it."""
        self._where = "a client given to RedisStore"
        self.where = self._where
        """Where the store is, without credentials (for messages)."""
        self._options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
        }
        self._redis: Any
        self.mode: Mode
        if isinstance(url, RedisCluster):
            self._redis, self.mode = url, "cluster"
        elif isinstance(url, Redis):
            pool_kind = type(url.connection_pool).__name__
            self._redis = url
            self.mode = "sentinel" if "Sentinel" in pool_kind else "single"
        else:
            url, wait_replicas, wait_timeout = _wait_options(url, wait_replicas, wait_timeout)
            self._open(url, cluster)
        if self.mode != "single":
            self.name = f"redis-{self.mode}"
        self.hash_tags = self.mode == "cluster" if hash_tags is None else hash_tags
        if wait_replicas is None:
            wait_replicas = 0 if self.mode == "single" else 1
        if wait_replicas < 0 or wait_timeout <= 0:
            raise ValueError("wait_replicas must be >= 0 and wait_timeout > 0")
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._nodes: dict[str, Redis] = {}
        self._cluster_ready = False
        self._claim = self._redis.register_script(_CLAIM)
        self._read = self._redis.register_script(_READ)

    def _open(self, url: str, cluster: bool | None) -> None:
        self.url = url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        # Never the password (redact_url cannot parse a list of hosts: done by hand there).
        userinfo, _, hosts = parts.netloc.rpartition("@")
        if "," not in hosts:
            self._where = redact_url(url)
        else:
            user = userinfo.partition(":")[0]
            self._where = f"{scheme}://{user + ':***@' if userinfo else ''}{hosts}"
        self.where = self._where
        if scheme in ("redis+sentinel", "rediss+sentinel"):
            creds, sentinels = _hosts(parts.netloc, 26379)
            path = [p for p in parts.path.split("/") if p]
            if not path:
                raise ValueError(f"{self._where}: the Sentinel URL needs /service-name")
            db = int(path[1]) if len(path) > 1 else 0
            sentinel = Sentinel(sentinels, sentinel_kwargs=dict(self._options), **self._options)
            extra: dict[str, Any] = dict(creds)
            if scheme.startswith("rediss"):
                extra["ssl"] = True
            self._redis = sentinel.master_for(path[0], db=db, **extra)
            self.mode = "sentinel"
        elif scheme in ("redis+cluster", "rediss+cluster") or cluster:
            creds, seeds = _hosts(parts.netloc, 6379)
            nodes = [ClusterNode(host, port) for host, port in seeds]
            options: dict[str, Any] = {**creds, **self._options}
            if scheme.startswith("rediss"):
                options["ssl"] = True
            self._redis = RedisCluster(startup_nodes=nodes, **options)
            self.mode = "cluster"
        else:
            self._redis = Redis.from_url(url, **self._options)
            self.mode = "single"

    @property
    def event_store_client(self) -> Any:
        """The client an SSE event store can share (Sentinel and cluster mode), else None."""
        if self.mode == "single" or self.url is None:
            return None
        return self._redis

    # -- keys ------------------------------------------------------------------------

    def key(self, key: str) -> str:
        """Where ``key`` lives in Redis: the hash-tagged name in a cluster, else itself."""
        if not self.hash_tags:
            return key
        for scope in _STATE_SCOPES:  # a session's (or a state id's) keys: one slot
            head = self.prefix + scope
            if key.startswith(head):
                ident, sep, rest = key[len(head) :].partition(":")
                return f"{head}{{{ident}}}{sep}{rest}"
        records = self.prefix + "idem:"
        if key.startswith(records):
            return f"{records}{{{key[len(records) :]}}}"
        return key

    # -- plumbing --------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"Redis store {self._where}: {what} failed: {exc}")

    async def _do(self, what: str, awaitable: Any) -> Any:
        try:
            return _text(await awaitable)
        except (RedisError, OSError) as exc:
            raise self._error(what, exc) from exc

    async def _node_for(self, key: str) -> Redis:
        """A plain client on the primary serving ``key``'s slot (cluster mode).

        Writes go there rather than through the cluster client because ``WAIT`` counts
        the writes of its own connection: the write and its ``WAIT`` must share one.
        """
        if not self._cluster_ready:
            await self._redis.initialize()
            self._cluster_ready = True
        node = self._redis.get_node_from_key(key)
        client = self._nodes.get(node.name)
        if client is None:
            options = {**node.connection_kwargs, "host": node.host, "port": node.port}
            client = Redis(
                host=node.host,
                port=int(node.port),
                username=options.get("username"),
                password=options.get("password"),
                ssl=bool(options.get("ssl", False)),
                decode_responses=True,
                socket_timeout=options.get("socket_timeout", self._options["socket_timeout"]),
                socket_connect_timeout=options.get(
                    "socket_connect_timeout", self._options["socket_connect_timeout"]
                ),
            )
            self._nodes[node.name] = client
        return client

    async def _refresh(self) -> None:
        """Learn the cluster's slots again (after MOVED, or a primary that stopped answering)."""
        # Detach first: other tasks may add clients while these close.
        clients = list(self._nodes.values())
        self._nodes.clear()
        for client in clients:
            await client.aclose()
        try:
            await self._redis.nodes_manager.initialize()
        except (RedisError, OSError):
            self._cluster_ready = False

    async def _script(
        self, what: str, script: str, keys: list[str], args: list[Any], *, wait: bool
    ) -> Any:
        """Run one write script (keys in one slot), then ``WAIT`` on the same connection."""
        waiting = wait and self.wait_replicas > 0
        for _ in range(_MAX_REDIRECTS):
            client = await self._node_for(keys[0]) if self.mode == "cluster" else self._redis
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.eval(script, len(keys), *keys, *args)
                    if waiting:
                        pipe.execute_command("WAIT", self.wait_replicas, _ms(self.wait_timeout))
                    results = await pipe.execute()
            except ResponseError as exc:
                if self.mode == "cluster" and str(exc).startswith(("MOVED", "ASK")):
                    await self._refresh()  # not run there: safe to send again
                    continue
                raise self._error(what, exc) from exc
            except (RedisError, OSError) as exc:
                if self.mode == "cluster":
                    await self._refresh()
                raise self._error(what, exc) from exc
            if waiting and int(results[1]) < self.wait_replicas:
                raise NotReplicatedError(
                    f"Redis store {self._where}: {what} reached {results[1]} of"
                    f" {self.wait_replicas} replicas within {self.wait_timeout:g} s; it may be"
                    " lost if the primary fails now (no replica? set wait_replicas=0)"
                )
            return _text(results[0])
        raise self._error(what, RedisError("the cluster kept redirecting"))

    async def _write(
        self, what: str, op: str, key: str, value: str | int, ttl: float | None, touch: str | None
    ) -> Any:
        keys = [self.key(key)]
        args: list[str | int] = [op, value, 0 if ttl is None else _ms(ttl), "", ""]
        if touch is not None and key.startswith(touch):
            keys.append(self.key(touch + INDEX_SUFFIX))
            args[3:] = [key[len(touch) :], self.key(touch)]
        return await self._script(what, _WRITE, keys, args, wait=True)

    # -- key/value -------------------------------------------------------------------

    async def ping(self) -> None:
        await self._do("PING", self._redis.ping())

    async def get(self, key: str) -> str | None:
        value = await self._do("GET", self._redis.get(self.key(key)))
        return None if value is None else str(value)

    async def set(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> None:
        await self._write("SET", "set", key, value, ttl, touch)

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None, touch: str | None
    ) -> str | None:
        current = await self._write("SET-IF-ABSENT", "setnx", key, value, ttl, touch)
        return None if current is None else str(current)

    async def incr(self, key: str, by: int, *, ttl: float | None, touch: str | None) -> int:
        return int(await self._write("INCRBY", "incr", key, by, ttl, touch))

    async def append(self, key: str, value: str, *, ttl: float | None, touch: str | None) -> int:
        return int(await self._write("RPUSH", "rpush", key, value, ttl, touch))

    async def get_list(self, key: str) -> list[str]:
        items = await self._do("LRANGE", self._redis.lrange(self.key(key), 0, -1))
        return [str(item) for item in items]

    async def delete(self, key: str) -> None:
        await self._write("DEL", "del", key, "", None, None)

    async def copy_prefix(self, old: str, new: str, *, ttl: float | None) -> int:
        old_index, new_index = self.key(old + INDEX_SUFFIX), self.key(new + INDEX_SUFFIX)
        ttl_ms = 0 if ttl is None else _ms(ttl)
        if not self.hash_tags:
            keys, args = [old_index, new_index], [old, new, ttl_ms]
            return int(await self._script("copy", _COPY, keys, args, wait=True))
        # Two slots: read the old session in its slot, replace the new one in its own.
        dumped = await self._script("copy (read)", _DUMP, [old_index], [self.key(old)], wait=False)
        entries = json.loads(dumped)
        for entry in entries:  # cjson writes an empty list as {}
            if entry[1] in ("list", "hash") and not isinstance(entry[2], list):
                entry[2] = []
        args = [self.key(new), ttl_ms, json.dumps(entries)]
        return int(await self._script("copy", _RESTORE, [new_index], args, wait=True))

    # -- the ledger ------------------------------------------------------------------

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
        record = self.key(key)
        args = [owner, fingerprint, _ms(lease), _ms(ttl), "1" if transactional else "0"]
        try:
            raw = await self._script("claim", _CLAIM, [record], args, wait=True)
        except NotReplicatedError:
            # Not run yet: take the claim back so a re-send may run it (best effort; if
            # this fails too, re-sends are told it started and never finished).
            with contextlib.suppress(StoreError):
                await self._script("unclaim", _UNCLAIM, [record], [owner], wait=False)
            raise
        return self._record(raw)

    async def read(self, key: str) -> LedgerRecord | None:
        return self._record(await self._do("read", self._read(keys=[self.key(key)])))

    async def renew(self, key: str, owner: str, *, lease: float) -> bool:
        args = [owner, _ms(lease)]
        return bool(await self._script("renew", _RENEW, [self.key(key)], args, wait=False))

    async def release(self, key: str, owner: str) -> None:
        # A lease that ends now (the record's own TTL is left as it is).
        await self._script("release", _RENEW, [self.key(key)], [owner, 0], wait=False)

    async def complete(self, key: str, owner: str, outcome: str, *, ttl: float) -> bool:
        args = [owner, outcome, _ms(ttl)]
        done = await self._script("complete", _COMPLETE, [self.key(key)], args, wait=True)
        return bool(done)

    async def commit(self, commit: Commit) -> CommitResult:
        """One script in one slot: in a cluster the record, the state and its index share
        the session's hash tag (keys elsewhere are refused as cross-slot)."""
        touch = self.key(commit.touch) if commit.touch else ""
        first = commit.record or next(iter(commit.writes), None) or next(iter(commit.expect), "")
        keys: list[str] = [self.key(first), (touch or self.key(first)) + INDEX_SUFFIX]
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
                keys.append(self.key(key))
                args.extend(_encode(value))
        if self.mode == "cluster" and len({key_slot(k.encode()) for k in keys}) > 1:
            # Atomic only within one slot: refuse rather than commit half of it.
            raise StoreError(
                f"Redis store {self._where}: a transactional commit on Redis Cluster may"
                " write only the state of its own session or state id (one hash slot);"
                " this one also writes keys elsewhere"
            )
        result = await self._script("commit", _COMMIT, keys, args, wait=True)
        if result not in ("committed", "conflict", "lost"):
            raise StoreError(f"Redis store {self._where}: commit answered {result!r}")
        return result  # type: ignore[no-any-return]

    async def forget(self, key: str, owner: str) -> bool:
        return bool(await self._script("forget", _FORGET, [self.key(key)], [owner], wait=True))

    async def close(self) -> None:
        clients = list(self._nodes.values())
        self._nodes.clear()
        for client in clients:
            await client.aclose()
        await self._redis.aclose()


def _encode(value: StateValue) -> tuple[str, str]:
    """A value for the commit script: (kind, payload)."""
    if value is None:
        return "n", ""
    if isinstance(value, str):
        return "s", value
    return "l", json.dumps(list(value), ensure_ascii=False)
