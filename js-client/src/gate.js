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
 * through only when it is newer. A delete that passes leaves a tombstone (the
 * key's version, marked deleted), so an older update arriving later is dropped
 * as stale instead of bringing the object back. Keys (tombstones included) live
 * in an LRU of `maxKeys`; a key pushed out goes into a Bloom filter, and an
 * update for a key that is not known but might have been evicted is dropped with
 * reason 'evicted' instead of being taken as new: the app reloads that object
 * (`synced.reloadKey`). So a small bound can cost reloads, never a silently
 * applied stale update.
 *
 * @param {{ maxKeys?: number, evictedFilterBits?: number }} [options]
 */
export function createVersionGate({ maxKeys = 10000, evictedFilterBits = 1 << 16 } = {}) {
  if (!(maxKeys >= 1 && evictedFilterBits >= 1)) throw new RangeError('maxKeys and evictedFilterBits must be >= 1')

  /**
   * key -> newest known version, stored as `-1 - version` for a tombstone (so
   * one number per key); Map order is the LRU order, oldest first.
   */
  let known = new Map()
  let evictedFilter = new Uint8Array(Math.ceil(evictedFilterBits / 8))
  let anyEvicted = false
  const counts = { accepted: 0, stale: 0, duplicate: 0, evicted: 0 }

  const versionOf = stored => (stored < 0 ? -1 - stored : stored)
  const store = (version, deleted) => (deleted ? -1 - version : version)
  const check = (key, version) => {
    if (typeof key !== 'string' || !(Number.isSafeInteger(version) && version >= 0)) {
      throw new TypeError(`cannot seed key ${key} with version ${version}`)
    }
  }

  const markEvicted = key => {
    anyEvicted = true
    for (const bit of bloomPositions(key, evictedFilterBits)) evictedFilter[bit >> 3] |= 1 << (bit & 7)
  }

  const mightBeEvicted = key =>
    anyEvicted &&
    bloomPositions(key, evictedFilterBits).every(bit => evictedFilter[bit >> 3] & (1 << (bit & 7)))

  const record = (key, stored) => {
    known.delete(key)
    known.set(key, stored)
    if (known.size > maxKeys) {
      const leastRecentlyUsed = known.keys().next().value
      known.delete(leastRecentlyUsed)
      markEvicted(leastRecentlyUsed)
    }
  }

  return {
    seed(key, version, deleted = false) {
      check(key, version)
      const current = known.get(key)
      const advanced = current === undefined || version > versionOf(current)
      record(key, advanced ? store(version, deleted) : current)
      return advanced
    },

    accept({ key, version, deleted }) {
      const current = known.get(key)
      const reason =
        current === undefined
          ? mightBeEvicted(key) ? 'evicted' : 'new'
          : version > versionOf(current) ? 'newer' : version === versionOf(current) ? 'duplicate' : 'stale'
      const accepted = reason === 'new' || reason === 'newer'
      if (accepted) {
        record(key, store(version, deleted))
        counts.accepted++
      } else {
        counts[reason]++
      }
      return { accepted, reason }
    },

    version(key) {
      const stored = known.get(key)
      return stored === undefined ? stored : versionOf(stored)
    },

    isDeleted: key => known.get(key) < 0,

    forget(key) {
      known.delete(key)
      markEvicted(key)
    },

    replace(items) {
      const snapshot = new Map()
      for (const { key, version, deleted } of items) {
        check(key, version)
        const other = snapshot.get(key)
        if (other === undefined || version > versionOf(other)) snapshot.set(key, store(version, deleted))
      }
      const previous = known
      known = new Map()
      for (const [key, stored] of previous) if (!snapshot.has(key)) known.set(key, store(versionOf(stored), true))
      for (const [key, stored] of snapshot) record(key, stored)
    },

    reset() {
      known = new Map()
      evictedFilter = new Uint8Array(evictedFilter.length)
      anyEvicted = false
    },

    stats: () => ({ size: known.size, ...counts })
  }
}
