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

  test('a delete leaves a tombstone that drops older updates', () => {
    const gate = createVersionGate()
    gate.seed('a', 3)
    assert.deepEqual(gate.accept({ key: 'a', version: 4, deleted: true }), { accepted: true, reason: 'newer' })
    assert.equal(gate.isDeleted('a'), true)
    assert.equal(gate.version('a'), 4)
    assert.equal(gate.accept(update('a', 3)).reason, 'stale', 'the late update of a deleted object')
    assert.equal(gate.accept(update('a', 4)).reason, 'duplicate')
    assert.equal(gate.accept({ key: 'a', version: 4, deleted: true }).reason, 'duplicate')
    assert.equal(gate.accept(update('a', 5)).reason, 'newer', 're-created at a newer version')
    assert.equal(gate.isDeleted('a'), false)
    assert.deepEqual(gate.accept({ key: 'b', version: 2, deleted: true }), { accepted: true, reason: 'new' })
    assert.equal(gate.accept(update('b', 1)).reason, 'stale')
    assert.equal(gate.isDeleted('never-seen'), false)
  })

  test('tombstones count against maxKeys and are evicted like other keys', () => {
    const gate = createVersionGate({ maxKeys: 2 })
    gate.accept({ key: 'a', version: 1, deleted: true })
    gate.accept({ key: 'b', version: 1, deleted: true })
    gate.accept(update('c', 1))
    assert.equal(gate.stats().size, 2)
    assert.equal(gate.version('a'), undefined)
    assert.equal(gate.accept(update('a', 0)).reason, 'evicted', 'never new: it may be the deleted one')
  })

  test('seed reports whether it advanced', () => {
    const gate = createVersionGate({ maxKeys: 1 })
    assert.equal(gate.seed('a', 5), true)
    assert.equal(gate.seed('a', 5), false)
    assert.equal(gate.seed('a', 4), false, 'an older reload must not be applied')
    assert.equal(gate.seed('a', 6, true), true)
    assert.equal(gate.isDeleted('a'), true)
    assert.equal(gate.seed('a', 6), false)
    assert.equal(gate.isDeleted('a'), true)
    gate.seed('b', 1)
    assert.equal(gate.seed('a', 2), true, 'unknown again: whatever was loaded is taken')
  })

  test('forget drops later updates as evicted', () => {
    const gate = createVersionGate()
    gate.seed('a', 3)
    gate.forget('a')
    assert.equal(gate.version('a'), undefined)
    assert.equal(gate.accept(update('a', 9)).reason, 'evicted')
  })

  test('replace adopts a snapshot and turns known keys missing from it into tombstones', () => {
    const gate = createVersionGate({ maxKeys: 10, evictedFilterBits: 64 })
    gate.accept(update('kept', 5))
    gate.accept(update('ahead', 9))
    for (let n = 0; n < 20; n++) gate.accept(update(`x${n}`, 1))
    gate.replace([
      { key: 'kept', version: 6 },
      { key: 'ahead', version: 7 },
      { key: 'tomb', version: 2, deleted: true },
      { key: 'dup', version: 1 },
      { key: 'dup', version: 3 }
    ])
    assert.equal(gate.version('kept'), 6)
    assert.equal(gate.version('ahead'), 7, "the snapshot's version is set, not maxed")
    assert.equal(gate.version('dup'), 3)
    assert.equal(gate.isDeleted('tomb'), true)
    assert.equal(gate.accept(update('tomb', 1)).reason, 'stale')
    assert.equal(gate.accept(update('x19', 0)).reason, 'stale', 'known keys missing from it became tombstones')
    assert.equal(gate.accept(update('x19', 2)).reason, 'newer')
    assert.equal(gate.accept(update('kept', 1)).reason, 'stale', 'evicted before, known again')
    assert.ok(gate.stats().size <= 10)
    assert.throws(() => gate.replace([{ key: 'bad', version: -1 }]), TypeError)
    assert.equal(gate.version('kept'), 6, 'a bad snapshot changes nothing')
  })

  test('a key deleted before a reload stays a tombstone after it, or stays evicted', () => {
    const gate = createVersionGate({ maxKeys: 1 })
    gate.accept(update('a', 1))
    gate.accept({ key: 'a', version: 2, deleted: true })
    gate.replace([])
    assert.equal(gate.isDeleted('a'), true)
    assert.equal(gate.accept(update('a', 1)).reason, 'stale')
    gate.accept(update('b', 1)) // evicts the tombstone of a
    gate.replace([{ key: 'b', version: 1 }])
    assert.equal(gate.accept(update('a', 1)).reason, 'evicted', 'the filter is kept: never new')
  })
})
