import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { bloomPositions, createVersionGate } from '../src/index.js'

const update = (key, version) => ({ key, version })

describe('version gate', () => {
  test('new, newer, duplicate and stale', () => {
    const gate = createVersionGate()
    assert.deepEqual(gate.accept(update('a', 3)), { accepted: true, reason: 'new' })
    assert.deepEqual(gate.accept(update('a', 5)), { accepted: true, reason: 'newer' })
    assert.deepEqual(gate.accept(update('a', 5)), { accepted: false, reason: 'duplicate' })
    assert.deepEqual(gate.accept(update('a', 4)), { accepted: false, reason: 'stale' })
    assert.deepEqual(gate.accept(update('b', 0)), { accepted: true, reason: 'new' })
    assert.equal(gate.version('a'), 5)
    assert.equal(gate.version('missing'), undefined)
    assert.deepEqual(gate.stats(), { size: 2, accepted: 3, stale: 1, duplicate: 1, evicted: 0 })
  })

  test('seed keeps the larger version', () => {
    const gate = createVersionGate()
    gate.seed('a', 7)
    gate.seed('a', 2)
    assert.equal(gate.version('a'), 7)
    assert.equal(gate.accept(update('a', 7)).reason, 'duplicate')
    assert.equal(gate.accept(update('a', 6)).reason, 'stale')
    gate.seed('a', 9)
    assert.equal(gate.accept(update('a', 8)).reason, 'stale')
    assert.equal(gate.accept(update('a', 10)).reason, 'newer')
    gate.seed('zero', 0)
    assert.equal(gate.accept(update('zero', 0)).reason, 'duplicate')
  })

  test('seed rejects bad input', () => {
    const gate = createVersionGate()
    assert.throws(() => gate.seed('a', -1), TypeError)
    assert.throws(() => gate.seed('a', 1.5), TypeError)
    assert.throws(() => gate.seed('a', 2 ** 53), TypeError)
    assert.throws(() => gate.seed(1, 1), TypeError)
  })

  test('options are validated', () => {
    assert.throws(() => createVersionGate({ maxKeys: 0 }), RangeError)
    assert.throws(() => createVersionGate({ evictedFilterBits: 0 }), RangeError)
  })

  test('memory is bounded: the least recently used key is evicted and then reported', () => {
    const gate = createVersionGate({ maxKeys: 3 })
    for (const key of ['a', 'b', 'c', 'd']) gate.accept(update(key, 1))
    assert.equal(gate.stats().size, 3)
    assert.equal(gate.version('a'), undefined)
    assert.deepEqual(gate.accept(update('a', 2)), { accepted: false, reason: 'evicted' })
    assert.deepEqual(gate.accept(update('a', 0)), { accepted: false, reason: 'evicted' })
    assert.equal(gate.stats().evicted, 2)
    gate.seed('a', 2)
    assert.equal(gate.accept(update('a', 2)).reason, 'duplicate')
    assert.equal(gate.accept(update('a', 3)).reason, 'newer')
    assert.equal(gate.version('b'), undefined, 'seeding a pushed b out')
    assert.equal(gate.accept(update('never-seen', 1)).reason, 'new')
  })

  test('accepted updates and seeds refresh recency; drops do not', () => {
    const gate = createVersionGate({ maxKeys: 3 })
    for (const key of ['a', 'b', 'c']) gate.accept(update(key, 1))
    gate.accept(update('a', 2))
    gate.accept(update('d', 1))
    assert.equal(gate.version('a'), 2)
    assert.equal(gate.version('b'), undefined)

    gate.seed('c', 0)
    gate.accept(update('e', 1))
    assert.equal(gate.version('c'), 1)
    assert.equal(gate.version('a'), undefined)

    gate.accept(update('d', 1))
    gate.accept(update('f', 1))
    assert.equal(gate.version('d'), undefined, 'a duplicate did not make d recent')
  })

  test('a full Bloom filter makes every unknown key a possible eviction', () => {
    const gate = createVersionGate({ maxKeys: 1, evictedFilterBits: 1 })
    gate.accept(update('a', 1))
    assert.equal(gate.accept(update('b', 1)).reason, 'new')
    assert.equal(gate.accept(update('anything', 1)).reason, 'evicted')
  })

  test('reset forgets keys and the filter but keeps the counters', () => {
    const gate = createVersionGate({ maxKeys: 1 })
    gate.accept(update('a', 5))
    gate.accept(update('b', 1))
    gate.accept(update('a', 1))
    gate.reset()
    assert.equal(gate.stats().size, 0)
    assert.equal(gate.version('b'), undefined)
    assert.deepEqual(gate.accept(update('a', 1)), { accepted: true, reason: 'new' })
    assert.deepEqual(gate.stats(), { size: 1, accepted: 3, stale: 0, duplicate: 0, evicted: 1 })
  })

  test('stats returns a snapshot', () => {
    const gate = createVersionGate()
    const before = gate.stats()
    gate.accept(update('a', 1))
    assert.equal(before.accepted, 0)
  })

  test('Bloom positions match the cross-language definition', () => {
    // Computed independently in Python: h = fnv1a_32(utf8(key));
    // h2 = (rotl32(h, 16)) | 1; [(h + i * h2) % bits for i in range(3)]
    assert.deepEqual(bloomPositions('user:1', 65536), [19147, 47078, 9473])
    assert.deepEqual(bloomPositions('a', 65536), [10540, 3385, 61766])
    assert.deepEqual(bloomPositions('Ünïcödé-ключ', 65536), [32313, 34330, 36347])
    assert.deepEqual(bloomPositions('user:1', 1000), [627, 350, 73])
    assert.deepEqual(bloomPositions('emoji:🚀', 7), [5, 4, 3])
  })

  test('many keys stay within the bound and an old update is never let through', () => {
    const gate = createVersionGate({ maxKeys: 100, evictedFilterBits: 4096 })
    for (let i = 1; i <= 1000; i++) gate.accept(update(`k${i}`, i))
    assert.equal(gate.stats().size, 100)
    for (let i = 1; i <= 1000; i++) {
      assert.equal(gate.accept(update(`k${i}`, 0)).accepted, false, `k${i}`)
    }
  })
})
