"""Server-side Lua scripts: every state change of a shard is one atomic script.

Each script touches only keys of a single shard (one Redis Cluster hash slot),
except ``RECORD_TOPOLOGY``, which touches only the meta key.
"""

from __future__ import annotations

import hashlib

import attrs

__all__ = [
    "ACK",
    "CLAIM",
    "ENQUEUE",
    "LEASE_ACQUIRE",
    "LEASE_LOST",
    "LEASE_RELEASE",
    "RECORD_TOPOLOGY",
    "SEAL_SHARD",
    "TOPOLOGY_ERROR",
    "LuaScript",
]

TOPOLOGY_ERROR = "TOPOLOGY"
LEASE_LOST = "LEASE_LOST"


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
    # Returns the first sequence number.
    """
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

CLAIM = LuaScript(
    "claim",
    # KEYS: queue, inflight, lease
    # ARGV: lease_value, max_count, max_bytes
    # Fenced: only the holder of this exact lease (owner and epoch) may take
    # messages. Returns {redelivery, m_1..m_k}: the head of the in-flight list
    # when it is not empty (left by a crash, a takeover or a failed ack),
    # otherwise up to max_count / max_bytes messages moved atomically from the
    # queue to the in-flight list.
    """
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
  for i = 2, n + 1, 512 do
    redis.call('RPUSH', KEYS[2], unpack(out, i, math.min(i + 511, n + 1)))
  end
  redis.call('LTRIM', KEYS[1], n, -1)
end
return out
""",
)

ACK = LuaScript(
    "ack",
    # KEYS: inflight, lease, state, dlq
    # ARGV: lease_value, n, delivered, expired, dead_letter_1 .. dead_letter_k
    # Fenced by the lease value seen at claim time: removes the first n in-flight
    # messages once Centrifugo accepted them (or they expired or were
    # dead-lettered), and records dead letters and counters.
    """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('LEASE_LOST')
end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[3], 'delivered', ARGV[3]) end
if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[3], 'expired', ARGV[4]) end
if #ARGV > 4 then
  redis.call('RPUSH', KEYS[4], unpack(ARGV, 5))
  redis.call('HINCRBY', KEYS[3], 'dead_lettered', #ARGV - 4)
end
return 1
""",
)

LEASE_ACQUIRE = LuaScript(
    "lease_acquire",
    # KEYS: lease, state
    # ARGV: owner, ttl_ms, held_value ('' if none), now_ms, may_acquire ('1' or '0')
    # Renews the lease if it still holds exactly ``held_value``; otherwise, when the
    # lease is free and may_acquire is '1', takes it with a new fencing epoch.
    # Returns the lease value ("owner#epoch") now held, or nil.
    """
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
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
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
    """
redis.call('HSETNX', KEYS[1], 'shards', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_ms', ARGV[2])
return redis.call('HGET', KEYS[1], 'shards')
""",
)
