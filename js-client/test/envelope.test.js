import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { EnvelopeError, MAX_DEPTH, parseEnvelope } from '../src/index.js'
import { readVectors } from './support/vectors.js'

const vectors = readVectors('envelopes')
const base = { v: 1, channel: 'c', key: 'k', version: 1, seq: 1, shard: 0, ts: 1, data: 1 }

describe('parseEnvelope: shared vectors', () => {
  for (const vector of vectors.valid) {
    test(`valid: ${vector.name}`, () => {
      assert.deepEqual(parseEnvelope(vector.encoded), vector.fields)
      assert.deepEqual(parseEnvelope(JSON.parse(vector.encoded)), vector.fields)
      assert.deepEqual(parseEnvelope(new TextEncoder().encode(vector.encoded)), vector.fields)
    })
  }

  test('unknown fields are ignored', () => {
    const parsed = parseEnvelope(vectors.unknown_field.encoded)
    assert.deepEqual(parsed, JSON.parse(vectors.unknown_field.canonical))
    assert.equal('future_field' in parsed, false)
  })

  for (const vector of vectors.equivalent) {
    test(`equivalent: ${vector.name}`, () => {
      assert.deepEqual(parseEnvelope(vector.encoded), JSON.parse(vector.canonical))
    })
  }

  for (const vector of vectors.old_readers) {
    test(`what an old reader sees of \`${vector.field}\``, () => {
      // An old reader keeps only the fields it knows, like parseEnvelope does with unknown ones.
      const { [vector.field]: known, ...rest } = parseEnvelope(vector.encoded)
      assert.ok(known !== undefined)
      assert.deepEqual(rest, vector.old_reader_fields)
    })
  }

  const refusedFor = reason => error => {
    assert.ok(error instanceof EnvelopeError)
    assert.equal(error.reason, reason)
    return true
  }

  for (const vector of vectors.invalid) {
    test(`invalid: ${vector.name} (${vector.reason})`, () => {
      if (vector.encoded_base64 !== undefined) {
        const bytes = new Uint8Array(Buffer.from(vector.encoded_base64, 'base64'))
        assert.throws(() => parseEnvelope(bytes), refusedFor(vector.reason))
        return
      }
      assert.throws(() => parseEnvelope(vector.encoded), refusedFor(vector.reason))
      assert.throws(() => parseEnvelope(new TextEncoder().encode(vector.encoded)), refusedFor(vector.reason))
      let decoded
      try {
        decoded = JSON.parse(vector.encoded)
      } catch {
        return
      }
      assert.throws(() => parseEnvelope(decoded), refusedFor(vector.reason))
    })
  }

  for (const vector of vectors.accepted) {
    test(`accepted: ${vector.name}`, () => {
      assert.deepEqual(parseEnvelope(vector.encoded).data, vector.data)
      assert.deepEqual(parseEnvelope(new TextEncoder().encode(vector.encoded)).data, vector.data)
    })
  }
})

describe('parseEnvelope: the JSON profile', () => {
  const nested = depth => {
    let value = 0
    for (let level = 0; level < depth; level++) value = [value]
    return value
  }

  test('data may nest MAX_DEPTH levels, not one more', () => {
    assert.equal(MAX_DEPTH, 100)
    assert.deepEqual(parseEnvelope({ ...base, data: nested(100) }).data, nested(100))
    assert.throws(() => parseEnvelope({ ...base, data: nested(101) }), {
      reason: 'too_deep',
      field: 'data',
      message: 'not a valid envelope: `data` nests deeper than 100 levels'
    })
  })

  test('numbers a double cannot hold are refused, also in unknown fields', () => {
    assert.throws(() => parseEnvelope({ ...base, data: { x: Infinity } }), { reason: 'number_out_of_range', field: 'data' })
    assert.throws(() => parseEnvelope({ ...base, data: [NaN] }), { reason: 'number_out_of_range' })
    assert.throws(() => parseEnvelope({ ...base, extra: -Infinity }), { reason: 'number_out_of_range', field: 'extra' })
  })

  test('lone surrogates are refused in values, keys and field names; pairs are fine', () => {
    assert.equal(parseEnvelope({ ...base, data: '\ud83d\ude80' }).data, '🚀')
    assert.throws(() => parseEnvelope({ ...base, data: 'a\ud800' }), { reason: 'invalid_unicode' })
    assert.throws(() => parseEnvelope({ ...base, data: { '\udc00': 1 } }), { reason: 'invalid_unicode' })
    assert.throws(() => parseEnvelope({ ...base, channel: '\udfff\ud800' }), { reason: 'invalid_unicode', field: 'channel' })
    assert.throws(() => parseEnvelope({ ...base, 'x\ud800': 1 }), { reason: 'invalid_unicode' })
  })

  test('bytes must be UTF-8', () => {
    const text = new TextEncoder().encode(JSON.stringify({ ...base, data: 'caf' }))
    const broken = new Uint8Array([...text.slice(0, -2), 0xe9, ...text.slice(-2)])
    assert.throws(() => parseEnvelope(broken), { reason: 'invalid_unicode', message: 'not a valid envelope: not UTF-8' })
  })
})

describe('parseEnvelope: rules shared with decode_envelope', () => {
  test('null optional fields count as absent', () => {
    const parsed = parseEnvelope({ ...base, tags: null, idempotency_key: null, ttl_ms: null })
    assert.deepEqual(parsed, base)
  })

  test('data may be null but must be present', () => {
    assert.equal(parseEnvelope({ ...base, data: null }).data, null)
    const { data, ...withoutData } = base
    assert.throws(() => parseEnvelope(withoutData), { name: 'EnvelopeError', field: 'data' })
  })

  const rejected = {
    'v is a boolean': [{ ...base, v: true }, 'v'],
    'v is missing': [{ ...base, v: undefined }, 'v'],
    'unknown major with valid fields': [{ ...base, v: 2 }, 'v'],
    'fractional version': [{ ...base, version: 1.5 }, 'version'],
    'channel is null': [{ ...base, channel: null }, 'channel'],
    'seq is a string': [{ ...base, seq: '1' }, 'seq'],
    'negative shard': [{ ...base, shard: -1 }, 'shard'],
    'ts is missing': [{ ...base, ts: undefined }, 'ts'],
    'ttl_ms zero': [{ ...base, ttl_ms: 0 }, 'ttl_ms'],
    'empty idempotency_key': [{ ...base, idempotency_key: '' }, 'idempotency_key'],
    'tags is an array': [{ ...base, tags: ['a'] }, 'tags'],
    'tag value is null': [{ ...base, tags: { a: null } }, 'tags']
  }
  for (const [name, [input, field]] of Object.entries(rejected)) {
    test(`rejects: ${name}`, () => {
      const json = JSON.parse(JSON.stringify(input))
      assert.throws(() => parseEnvelope(json), error => {
        assert.ok(error instanceof EnvelopeError)
        assert.equal(error.field, field)
        assert.match(error.message, new RegExp(`^not a valid envelope: \`${field}\``))
        return true
      })
    })
  }

  test('non-objects are rejected without a field', () => {
    for (const input of [null, 42, 'garbage', '[1]', [base], new Uint8Array([0xff])]) {
      assert.throws(() => parseEnvelope(input), error => error instanceof EnvelopeError && error.field === undefined)
    }
  })

  test('messages name the field and what was wrong', () => {
    assert.throws(() => parseEnvelope({ ...base, version: 2 ** 53 }), {
      message: 'not a valid envelope: `version` must be an integer in 0..2**53-1, got 9007199254740992'
    })
    assert.throws(() => parseEnvelope({ ...base, seq: '1' }), { message: /`seq` must be an integer >= 1, got string/ })
    assert.throws(() => parseEnvelope({ ...base, key: 7n }), { field: 'key' })
  })

  test('the major version problem is named', () => {
    assert.throws(() => parseEnvelope('{"v":2,"stuff":true}'), /unsupported major version/)
  })

  test('returns a fresh object that does not share tags with the input', () => {
    const input = { ...base, tags: { a: 'b' } }
    const parsed = parseEnvelope(input)
    input.tags.a = 'changed'
    assert.equal(parsed.tags.a, 'b')
  })
})

describe('parseEnvelope: deletes', () => {
  test('a delete carries deleted: true and null data; an update has no deleted field', () => {
    assert.deepEqual(parseEnvelope({ ...base, data: null, deleted: true }), { ...base, data: null, deleted: true })
    assert.equal('deleted' in parseEnvelope({ ...base, deleted: false }), false)
    assert.equal('deleted' in parseEnvelope(base), false)
  })

  test('a bad delete names the field', () => {
    assert.throws(() => parseEnvelope({ ...base, deleted: true }), { field: 'data', message: /must be null in a delete/ })
    assert.throws(() => parseEnvelope({ ...base, data: null, deleted: 'yes' }), { field: 'deleted' })
    assert.throws(() => parseEnvelope({ ...base, data: null, deleted: null }), { field: 'deleted' })
  })
})
