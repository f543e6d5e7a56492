const FNV_OFFSET_BASIS = 0x811c9dc5
const FNV_PRIME = 0x01000193
const utf8 = new TextEncoder()

/**
 * 32-bit FNV-1a of a string's UTF-8 bytes (or of raw bytes), as an unsigned integer.
 * Identical to `centrifugo_async.routing.fnv1a_32`.
 *
 * @param {string | Uint8Array} input
 * @returns {number}
 */
export function fnv1a32(input) {
  const bytes = typeof input === 'string' ? utf8.encode(input) : input
  let hash = FNV_OFFSET_BASIS
  for (const byte of bytes) hash = Math.imul(hash ^ byte, FNV_PRIME)
  return hash >>> 0
}

/**
 * The shard (0 <= shard < shards) that carries every message of `key`:
 * the same routing the Python publisher uses, so a client can tell which
 * per-shard sequence an object's updates travel on.
 *
 * @param {string} key
 * @param {number} shards
 * @returns {number}
 */
export function shardFor(key, shards) {
  if (!Number.isInteger(shards) || shards < 1) {
    throw new RangeError(`shards must be a positive integer, got ${shards}`)
  }
  return fnv1a32(key) % shards
}
