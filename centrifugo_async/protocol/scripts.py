"""Server-side Lua scripts: every state change of a shard is one atomic script.

Each script touches only keys of a single shard (one Redis Cluster hash slot),
except ``RECORD_TOPOLOGY``, which touches only the meta key, and ``HEARTBEAT``,
which touches only the relay group's key.

Memory. The Redis holding the queues runs with ``maxmemory`` and the
``noeviction`` policy (the operations guide says why): at the limit it refuses
every command that may grow memory. Publishing grows memory and must be refused
then; the relay's work only shrinks it (delivered messages leave Redis), so the
relay must keep working to bring memory back under the limit. The scripts the
relay runs on every round therefore declare ``#!lua flags=allow-oom`` (Redis 7
or newer), which lets them run at the limit, and each one is written so that
its net effect shrinks memory or keeps it flat, writing what it frees before
what it adds; each says why below. A script that may grow memory
(``ENQUEUE``, ``ACK_GROWING``, ``SEAL_SHARD``, ``RECORD_TOPOLOGY``, and the
``ZADD`` that first adds a relay to its group) stays subject to the limit.
"""

from __future__ import annotations

import hashlib

import attrs

__all__ = [
    "ACK",
    "ACK_CLAIM",
    "ACK_GROWING",
    "ACK_GROWS",
    "CLAIM",
    "DROP_SUPERSEDED",
    "ENQUEUE",
    "HEARTBEAT",
    "KNOWN_VERSIONS",
    "LEASE_ACQUIRE",
    "LEASE_LOST",
    "LEASE_RELEASE",
    "RECORD_TOPOLOGY",
    "SEAL_SHARD",
    "TOPOLOGY_ERROR",
    "VERSION_OVERHEAD",
    "LuaScript",
]

TOPOLOGY_ERROR = "TOPOLOGY"
LEASE_LOST = "LEASE_LOST"
ACK_GROWS = "ACK_GROWS"
"""The error ``ACK`` replies with when its dead letters outweigh what it removes."""
VERSION_OVERHEAD = 64
"""Bytes ``ACK``'s memory guard counts for one versions field on top of its text: about
what a hash entry costs Redis beyond its field and value (dict entry, string headers)."""

_ALLOW_OOM = "#!lua flags=allow-oom\n"
"""Runs even when Redis is at ``maxmemory``: only for scripts that never grow memory."""

_SUBJECT_TO_MAXMEMORY = "#!lua\n"
"""Declared flags, none of them: Redis refuses the whole script at ``maxmemory``."""


@attrs.frozen
class LuaScript:
    name: str
    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


ENQUEUE = LuaScript(
    "enqueue",
    # KEYS: state, queue, bell
    # ARGV: shards, head_1, tail_1, ..., head_n, tail_n
    # Assigns n consecutive sequence numbers, splices each between its head and
    # tail (the envelope bytes around the "seq" value) and appends them in order.
    # Returns the first sequence number. Every key's type is checked before the
    # first write, so a failing call (a key an operator overwrote) writes nothing:
    # no sequence number is spent, no gap is left.
    """
local expected = {'hash', 'list', 'list'}
for i = 1, 3 do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= expected[i] then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. found ..
      ', enqueue needs a ' .. expected[i] .. ' there (nothing was written)')
  end
end
local recorded = redis.call('HGET', KEYS[1], 'shards')
if recorded and recorded ~= ARGV[1] then
  return redis.error_reply('TOPOLOGY shard state records shards=' .. recorded ..
    ' but the publisher is configured with shards=' .. ARGV[1])
end
if not recorded then redis.call('HSET', KEYS[1], 'shards', ARGV[1]) end
local n = (#ARGV - 1) / 2
local last = redis.call('HINCRBY', KEYS[1], 'seq', n)
local first = last - n + 1
local was_empty = redis.call('LLEN', KEYS[2]) == 0
local chunk = {}
for i = 1, n do
  chunk[#chunk + 1] = ARGV[2 * i] .. string.format('%d', first + i - 1) .. ARGV[2 * i + 1]
  if #chunk == 512 then
    redis.call('RPUSH', KEYS[2], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then redis.call('RPUSH', KEYS[2], unpack(chunk)) end
if was_empty then
  redis.call('DEL', KEYS[3])
  redis.call('RPUSH', KEYS[3], '1')
end
return first
""",
)

_CLAIM_BODY = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
local max_count = tonumber(ARGV[2])
local max_bytes = tonumber(ARGV[3])
local redelivery = 1
local pending = redis.call('LRANGE', KEYS[2], 0, max_count - 1)
if #pending == 0 then
  redelivery = 0
  pending = redis.call('LRANGE', KEYS[1], 0, max_count - 1)
end
local out = {redelivery}
local size = 0
for i = 1, #pending do
  size = size + #pending[i]
  if i > 1 and size > max_bytes then break end
  out[i + 1] = pending[i]
end
local n = #out - 1
if redelivery == 0 and n > 0 then
  redis.call('LTRIM', KEYS[1], n, -1)
  for i = 2, n + 1, 512 do
    redis.call('RPUSH', KEYS[2], unpack(out, i, math.min(i + 511, n + 1)))
  end
end
return out
"""

CLAIM = LuaScript(
    "claim",
    # KEYS: queue, inflight, lease
    # ARGV: lease_value, max_count, max_bytes
    # Fenced: only the holder of this exact lease (owner and epoch) may take
    # messages. Returns {redelivery, m_1..m_k}: the head of the in-flight list
    # when it is not empty (left by a crash, a takeover or a failed ack),
    # otherwise up to max_count / max_bytes messages moved atomically from the
    # queue to the in-flight list.
    # allow-oom: it moves entries from one list to the other and creates
    # nothing; the queue is trimmed before the in-flight list grows.
    _ALLOW_OOM + _CLAIM_BODY,
)

_ACK_BODY = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
local n = tonumber(ARGV[2])
local last_pair = 8 + 2 * tonumber(ARGV[8])
if ARGV[5] == '1' then
  local added = 0
  for i = 9, last_pair, 2 do added = added + #ARGV[i] + #ARGV[i + 1] + VERSION_OVERHEAD end
  for i = last_pair + 1, #ARGV do added = added + #ARGV[i] end
  if added > 0 then
    local removed = 0
    for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, n - 1)) do
      removed = removed + #entry
    end
    if added > removed then
      return redis.error_reply('ACK_GROWS dead letters and versions of ' .. added ..
        ' bytes for ' .. removed .. ' bytes removed')
    end
  end
end
redis.call('LTRIM', KEYS[1], n, -1)
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[3], 'delivered', ARGV[3]) end
if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[3], 'expired', ARGV[4]) end
if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[3], 'superseded', ARGV[6]) end
if last_pair > 8 then
  for i = 9, last_pair, 1024 do
    redis.call('HSET', KEYS[5], unpack(ARGV, i, math.min(i + 1023, last_pair)))
  end
  if redis.call('HLEN', KEYS[5]) >= tonumber(ARGV[7]) then
    redis.call('UNLINK', KEYS[6])
    redis.call('RENAME', KEYS[5], KEYS[6])
  end
end
if #ARGV > last_pair then
  redis.call('RPUSH', KEYS[4], unpack(ARGV, last_pair + 1))
  redis.call('HINCRBY', KEYS[3], 'dead_lettered', #ARGV - last_pair)
end
return 1
""".replace("VERSION_OVERHEAD", str(VERSION_OVERHEAD))

ACK = LuaScript(
    "ack",
    # KEYS: inflight, lease, state, dlq, versions, versions_old
    # ARGV: lease_value, n, delivered, expired, guard ('1'), superseded, memory,
    #       m, field_1, version_1 .. field_m, version_m, dead_letter_1 .. dead_letter_k
    # Fenced by the lease value seen at claim time: removes the first n in-flight
    # messages once Centrifugo accepted them (or they expired, were superseded
    # or were dead-lettered), and records dead letters, counters and the m
    # (channel, key) versions just delivered (monotonic delivery). The versions
    # hash is one generation: once it holds ``memory`` fields it becomes the old
    # generation, replacing the one before, so a shard remembers at least the
    # last ``memory`` (channel, key) pairs it delivered, and about twice that at most.
    # allow-oom: it trims the in-flight list first; the counters are a few
    # fields of the shard's state hash, created once; a rotation only frees. A
    # version field is smaller than the envelope it comes from (which holds the
    # channel, the key, the version and more). Dead letters are larger than the
    # entries they stand for, so with the guard set it replies ACK_GROWS,
    # changing nothing, when they and the version fields (each counted with
    # VERSION_OVERHEAD bytes more) weigh more than the entries it removes; the
    # relay then runs ACK_GROWING.
    _ALLOW_OOM + _ACK_BODY,
)

ACK_GROWING = LuaScript(
    "ack_growing",
    # The same as ACK (called with guard '0'), for a batch whose dead letters
    # weigh more than what it removes: subject to maxmemory, so at the limit
    # Redis refuses it whole and the batch stays in flight until memory frees.
    _SUBJECT_TO_MAXMEMORY + _ACK_BODY,
)

ACK_CLAIM = LuaScript(
    "ack_claim",
    # KEYS: inflight, lease, state, dlq, versions, versions_old, queue
    # ARGV: max_count, max_bytes, then ACK's arguments (guard '1')
    # ACK, then CLAIM of the next batch under the same lease, in one atomic
    # step: one round trip per batch instead of two. The bodies are ACK's and
    # CLAIM's, each run as a function with its own KEYS and ARGV, so the fence,
    # the in-flight semantics, the version memory and the dead letters are
    # exactly theirs. When the ack fails (LEASE_LOST, ACK_GROWS) nothing is
    # claimed and its error is the reply; otherwise the reply is CLAIM's.
    # allow-oom: both parts are (see ACK and CLAIM).
    _ALLOW_OOM
    + "local function ack(KEYS, ARGV)\n"
    + _ACK_BODY
    + "end\nlocal function claim(KEYS, ARGV)\n"
    + _CLAIM_BODY
    + """end
local ack_argv = {}
for i = 3, #ARGV do ack_argv[i - 2] = ARGV[i] end
local acked = ack(KEYS, ack_argv)
if type(acked) == 'table' and acked.err then return acked end
return claim({KEYS[7], KEYS[1], KEYS[2]}, {ack_argv[1], ARGV[1], ARGV[2]})
""",
)

DROP_SUPERSEDED = LuaScript(
    "drop_superseded",
    # KEYS: queue, lease, state; ARGV: lease_value, count, sha1 (hex) of the head entry
    # Fenced like CLAIM: removes the first count queued entries without delivering
    # them, when the relay read them and found each superseded by a newer
    # version queued behind it (latest-wins), and counts them as superseded.
    # Only if the head is still the entry the relay read first: a queue only
    # loses its head (to its lease holder) and grows at its tail, so those
    # entries are then exactly the ones it read. Returns count, or 0 (nothing done).
    # allow-oom: it only removes, and bumps a counter created once.
    _ALLOW_OOM
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
local count = tonumber(ARGV[2])
local head = redis.call('LINDEX', KEYS[1], 0)
if not head or redis.sha1hex(head) ~= ARGV[3] or redis.call('LLEN', KEYS[1]) < count then
  return 0
end
redis.call('LTRIM', KEYS[1], count, -1)
redis.call('HINCRBY', KEYS[3], 'superseded', count)
return count
""",
)

KNOWN_VERSIONS = LuaScript(
    "known_versions",
    # KEYS: versions, versions_old; ARGV: field_1 .. field_k
    # The last delivered version of each (channel, key) field: the higher of the
    # two generations, or false when neither remembers it. It only reads.
    "#!lua flags=no-writes,allow-oom\n"
    + """
local out = {}
for i = 1, #ARGV, 512 do
  local last = math.min(i + 511, #ARGV)
  local now = redis.call('HMGET', KEYS[1], unpack(ARGV, i, last))
  local old = redis.call('HMGET', KEYS[2], unpack(ARGV, i, last))
  for j = 1, last - i + 1 do
    local a, b = tonumber(now[j]), tonumber(old[j])
    if a and (not b or a >= b) then
      out[i + j - 1] = now[j]
    elseif b then
      out[i + j - 1] = old[j]
    else
      out[i + j - 1] = false
    end
  end
end
return out
""",
)

LEASE_ACQUIRE = LuaScript(
    "lease_acquire",
    # KEYS: lease, state
    # ARGV: owner, ttl_ms, held_value ('' if none), now_ms, may_acquire ('1' or '0')
    # Renews the lease if it still holds exactly ``held_value``; otherwise, when the
    # lease is free and may_acquire is '1', takes it with a new fencing epoch.
    # Returns the lease value ("owner#epoch") now held, or nil.
    # allow-oom: a renewal only moves an expiry. Taking a free lease recreates
    # the one small key per shard that expired or was released, and overwrites
    # two fields of the state hash: memory stays within what a shard's lease
    # always takes, whatever the traffic.
    _ALLOW_OOM
    + """
local current = redis.call('GET', KEYS[1])
if current then
  if current == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return current
  end
  return false
end
if ARGV[5] ~= '1' then return false end
local epoch = redis.call('HINCRBY', KEYS[2], 'lease_epoch', 1)
local value = ARGV[1] .. '#' .. epoch
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'lease_since_ms', ARGV[4])
return value
""",
)

LEASE_RELEASE = LuaScript(
    "lease_release",
    # KEYS: lease; ARGV: value. Frees the lease only if it still holds ``value``.
    # allow-oom: it only deletes.
    _ALLOW_OOM
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

HEARTBEAT = LuaScript(
    "heartbeat",
    # KEYS: relays; ARGV: owner, expires_ms, now_ms
    # Drops the members whose heartbeat expired, then moves the expiry of
    # ``owner`` if it is a member. Returns {renewed (1 or 0), member_1..member_k}.
    # allow-oom: it deletes first and then only overwrites a score. Adding a
    # relay that is not a member grows the set, so the caller does that with a
    # plain ZADD, which Redis refuses at the limit.
    _ALLOW_OOM
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local renewed = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
  renewed = 1
end
local out = {renewed}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do out[#out + 1] = member end
return out
""",
)

SEAL_SHARD = LuaScript(
    "seal_shard",
    # KEYS: queue, inflight, state; ARGV: shards
    # Stamps the shard with a new shard count, but only while it holds no message.
    # From then on the enqueue script refuses publishers configured with the old
    # count, so nothing routed the old way can land behind the seal.
    """
if redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) > 0 then
  return 0
end
redis.call('HSET', KEYS[3], 'shards', ARGV[1])
return 1
""",
)

RECORD_TOPOLOGY = LuaScript(
    "record_topology",
    # KEYS: meta; ARGV: shards, now_ms. First writer wins; returns the recorded count.
    # Reads first: a count that is already recorded is returned without a
    # write, so a relay started with --shards starts at maxmemory too.
    """
local recorded = redis.call('HGET', KEYS[1], 'shards')
if recorded then return recorded end
redis.call('HSETNX', KEYS[1], 'shards', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_ms', ARGV[2])
return redis.call('HGET', KEYS[1], 'shards')
""",
)
