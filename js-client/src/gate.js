import { fnv1a32 } from './routing.js'

const BLOOM_HASHES = 3

/**
 * Bit positions of `key` in the evicted-keys Bloom filter: double hashing over
 * one FNV-1a-32 of the key's UTF-8 bytes, h1 = hash and h2 = hash rotated by
 * 16 bits (forced odd), position_i = (h1 + i * h2) mod bits for i = 0, 1, 2.
 * The Python twin uses the same positions.
 *
 * @param {string} key
 * @param {number} bits
 * @returns {number[]}
 */
export function bloomPositions(key, bits) {
  const h1 = fnv1a32(key)
  const h2 = ((h1 >>> 16) | (h1 << 16) | 1) >>> 0
  const positions = []
  for (let i = 0; i < BLOOM_HASHES; i++) positions.push((h1 + i * h2) % bits)
  return positions
}

/**
 * A per-key version gate with bounded memory.
 *
 * It remembers the newest version applied for each key and lets an update
 * through only when it is newer. Keys live in an LRU of `maxKeys`; a key pushed
 * out goes into a Bloom filter, and an update for a key that is not known but
 * might have been evicted is dropped with reason 'evicted' instead of being
 * taken as new: the app reloads that object and seeds it. So a small bound can
 * cost reloads, never a silently applied stale update.
 *
 * @param {{ maxKeys?: number, evictedFilterBits?: number }} [options]
 */
export function createVersionGate({ maxKeys = 10000, evictedFilterBits = 1 << 16 } = {}) {
  if (!(maxKeys >= 1 && evictedFilterBits >= 1)) throw new RangeError('maxKeys and evictedFilterBits must be >= 1')

  /** key -> newest known version; Map order is the LRU order, oldest first. */
  let known = new Map()
  let evictedFilter = new Uint8Array(Math.ceil(evictedFilterBits / 8))
  let anyEvicted = false
  const counts = { accepted: 0, stale: 0, duplicate: 0, evicted: 0 }

  const markEvicted = key => {
    anyEvicted = true
    for (const bit of bloomPositions(key, evictedFilterBits)) evictedFilter[bit >> 3] |= 1 << (bit & 7)
  }

  const mightBeEvicted = key =>
    anyEvicted &&
    bloomPositions(key, evictedFilterBits).every(bit => evictedFilter[bit >> 3] & (1 << (bit & 7)))

  const record = (key, version) => {
    known.delete(key)
    known.set(key, version)
    if (known.size > maxKeys) {
      const leastRecentlyUsed = known.keys().next().value
      known.delete(leastRecentlyUsed)
      markEvicted(leastRecentlyUsed)
    }
  }

  return {
    seed(key, version) {
      if (typeof key !== 'string' || !(Number.isSafeInteger(version) && version >= 0)) {
        throw new TypeError(`cannot seed key ${key} with version ${version}`)
      }
      record(key, Math.max(known.get(key) ?? -1, version))
    },

    accept({ key, version }) {
      const current = known.get(key)
      const reason =
        current === undefined
          ? mightBeEvicted(key) ? 'evicted' : 'new'
          : version > current ? 'newer' : version === current ? 'duplicate' : 'stale'
      const accepted = reason === 'new' || reason === 'newer'
      if (accepted) {
        record(key, version)
        counts.accepted++
      } else {
        counts[reason]++
      }
      return { accepted, reason }
    },

    version: key => known.get(key),

    reset() {
      known = new Map()
      evictedFilter = new Uint8Array(evictedFilter.length)
      anyEvicted = false
    },

    stats: () => ({ size: known.size, ...counts })
  }
}
