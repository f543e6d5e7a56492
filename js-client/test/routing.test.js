import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { fnv1a32, shardFor } from '../src/index.js'
import { readVectors } from './support/vectors.js'

const routing = readVectors('routing')

describe('shard routing: shared vectors', () => {
  for (const vector of routing.cases) {
    test(`key ${JSON.stringify(vector.key).slice(0, 40)}`, () => {
      assert.equal(Buffer.from(vector.key, 'utf8').toString('hex'), vector.utf8_hex)
      assert.equal(fnv1a32(vector.key), vector.fnv1a_32)
      assert.equal(fnv1a32(Buffer.from(vector.utf8_hex, 'hex')), vector.fnv1a_32)
      for (const [shards, shard] of Object.entries(vector.shards)) {
        assert.equal(shardFor(vector.key, Number(shards)), shard, `${shards} shards`)
      }
    })
  }

  test('shard count must be a positive integer', () => {
    for (const shards of [0, -1, 1.5, NaN, '4']) {
      assert.throws(() => shardFor('a', shards), RangeError)
    }
  })
})
