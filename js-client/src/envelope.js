/** Largest object version: the largest integer a JavaScript number holds exactly. */
export const MAX_OBJECT_VERSION = Number.MAX_SAFE_INTEGER

/** Major schema version this reader understands. */
export const ENVELOPE_VERSION = 1

/** Deepest nesting of containers inside any envelope field (the JSON profile). */
export const MAX_DEPTH = 100

/**
 * Raised by `parseEnvelope` for anything that is not a valid v1 envelope.
 * `field` names the offending field when there is one; `reason` is the rule
 * broken, as in the relay's dead letters: `invalid_envelope`, or one of the
 * JSON profile's `invalid_unicode`, `too_deep`, `number_out_of_range`.
 */
export class EnvelopeError extends Error {
  /**
   * @param {string} problem
   * @param {string} [field]
   * @param {string} [reason]
   */
  constructor(problem, field, reason = 'invalid_envelope') {
    super(`not a valid envelope: ${problem}`)
    this.name = 'EnvelopeError'
    this.field = field
    this.reason = reason
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/

const isPlainObject = value =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
const isStringMap = value =>
  isPlainObject(value) && Object.values(value).every(item => typeof item === 'string')
const isNonEmptyString = value => typeof value === 'string' && value !== ''
const isIntegerIn = (min, max = Infinity) => value =>
  Number.isInteger(value) && value >= min && value <= max
const isAnything = () => true
const isBoolean = value => typeof value === 'boolean'
const describe = value => (typeof value === 'number' ? value : value === null ? 'null' : typeof value)

/**
 * The JSON profile every SDK decodes (docs/protocol.md): strings UTF-8 can
 * carry, nesting within MAX_DEPTH, finite numbers. `JSON.parse` has already
 * turned `1e400` into Infinity and `"\ud800"` into a lone surrogate.
 */
const checkProfile = (field, value) => {
  const breach = (problem, reason) => {
    throw new EnvelopeError(`\`${field}\` ${problem}`, field, reason)
  }
  const stack = [[field, 0], [value, 0]]
  while (stack.length > 0) {
    const [item, depth] = stack.pop()
    if (typeof item === 'string') {
      if (loneSurrogate.test(item)) breach('holds a lone surrogate', 'invalid_unicode')
    } else if (typeof item === 'number') {
      if (!Number.isFinite(item)) breach(`holds ${item}, not a finite double`, 'number_out_of_range')
    } else if (typeof item === 'object' && item !== null) {
      if (depth >= MAX_DEPTH) breach(`nests deeper than ${MAX_DEPTH} levels`, 'too_deep')
      for (const [key, child] of Object.entries(item)) stack.push([key, depth + 1], [child, depth + 1])
    }
  }
}

/**
 * Validate the `data` of a publication as an envelope v1, following the same
 * rules as Python's `decode_envelope`; returns a new object holding only the
 * fields this reader knows (unknown fields are ignored for forward
 * compatibility, null optional fields are treated as absent).
 *
 * A delete (`deleted: true`, which requires `data: null`) comes back with
 * `deleted: true`; an update has no `deleted` field.
 *
 * Accepts the already-decoded object (JSON protocol), or JSON text as a
 * string or bytes (Protobuf protocol delivers bytes). Every field, unknown
 * ones included, must keep to the JSON profile the relay enforces.
 *
 * @param {unknown} input
 * @throws {EnvelopeError}
 */
export function parseEnvelope(input) {
  let raw = input
  if (raw instanceof Uint8Array) {
    try {
      raw = utf8.decode(raw)
    } catch {
      throw new EnvelopeError('not UTF-8', undefined, 'invalid_unicode')
    }
  }
  if (typeof raw === 'string') {
    try {
      raw = JSON.parse(raw)
    } catch {
      throw new EnvelopeError('not JSON')
    }
  }
  if (!isPlainObject(raw)) throw new EnvelopeError('not a JSON object')
  for (const [field, value] of Object.entries(raw)) checkProfile(field, value)

  const fail = (field, problem) => {
    throw new EnvelopeError(`\`${field}\` ${problem}`, field)
  }
  const take = (field, isValid, expected) => {
    if (!Object.hasOwn(raw, field)) fail(field, 'is missing')
    if (!isValid(raw[field])) fail(field, `must be ${expected}, got ${describe(raw[field])}`)
    return raw[field]
  }
  const major = take('v', Number.isInteger, 'an integer')
  if (major !== ENVELOPE_VERSION) fail('v', `${major} is an unsupported major version (this reader knows 1)`)

  const envelope = {
    v: major,
    channel: take('channel', isNonEmptyString, 'a non-empty string'),
    key: take('key', isNonEmptyString, 'a non-empty string'),
    version: take('version', isIntegerIn(0, MAX_OBJECT_VERSION), 'an integer in 0..2**53-1'),
    seq: take('seq', isIntegerIn(1), 'an integer >= 1'),
    shard: take('shard', isIntegerIn(0), 'an integer >= 0'),
    ts: take('ts', Number.isInteger, 'an integer'),
    data: take('data', isAnything)
  }
  if (raw.tags != null) envelope.tags = { ...take('tags', isStringMap, 'an object of strings') }
  if (raw.idempotency_key != null) {
    envelope.idempotency_key = take('idempotency_key', isNonEmptyString, 'a non-empty string')
  }
  if (raw.ttl_ms != null) envelope.ttl_ms = take('ttl_ms', isIntegerIn(1), 'an integer >= 1')
  if (Object.hasOwn(raw, 'deleted') && take('deleted', isBoolean, 'a boolean')) {
    if (envelope.data !== null) fail('data', 'must be null in a delete')
    envelope.deleted = true
  }
  if (raw.traceparent != null) {
    envelope.traceparent = take('traceparent', value => typeof value === 'string', 'a string')
  }
  return envelope
}
