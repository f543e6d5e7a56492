/**
 * A stand-in for a centrifuge-js Subscription, for unit tests only: listeners
 * are called synchronously and their exceptions propagate to the caller of
 * `emit`, so a test fails if the helper ever throws into the SDK.
 */
export class FakeSubscription {
  constructor(state = 'unsubscribed') {
    this.state = state
    this.listeners = new Map()
    this.subscribeCalls = 0
    this.unsubscribeCalls = 0
  }

  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, [])
    this.listeners.get(event).push(listener)
    return this
  }

  removeListener(event, listener) {
    this.listeners.set(event, (this.listeners.get(event) || []).filter(other => other !== listener))
    return this
  }

  listenerCount(event) {
    return (this.listeners.get(event) || []).length
  }

  emit(event, ctx) {
    for (const listener of [...(this.listeners.get(event) || [])]) listener(ctx)
  }

  subscribe() {
    this.subscribeCalls++
    if (this.state === 'unsubscribed') this.state = 'subscribing'
  }

  unsubscribe() {
    this.unsubscribeCalls++
    this.state = 'unsubscribed'
    this.emit('unsubscribed', { channel: 'obj:test', code: 0, reason: 'unsubscribe called' })
  }

  /** Simulate the subscription ending (the server's decision when `code` is not 0). */
  ended(code, reason) {
    this.state = 'unsubscribed'
    this.emit('unsubscribed', { channel: 'obj:test', code, reason })
  }

  /** Simulate the server confirming a subscription (or a resubscription). */
  subscribed({ wasRecovering = false, recovered = false } = {}) {
    this.state = 'subscribed'
    this.emit('subscribed', { channel: 'obj:test', wasRecovering, recovered })
  }

  /** Deliver a publication whose data is an envelope for `key` at `version`. */
  publish(key, version, data = { key, version }, seq = 1) {
    this.emit('publication', {
      channel: 'obj:test',
      data: { v: 1, channel: 'obj:test', key, version, seq, shard: 0, ts: Date.now(), data }
    })
  }

  /** Deliver a publication whose data is a delete of `key` at `version`. */
  publishDelete(key, version, seq = 1) {
    this.emit('publication', {
      channel: 'obj:test',
      data: { v: 1, channel: 'obj:test', key, version, seq, shard: 0, ts: Date.now(), data: null, deleted: true }
    })
  }
}

/** A `load` whose calls resolve or reject when the test says so. */
export function controlledLoad() {
  const calls = []
  const load = context =>
    new Promise((resolve, reject) => {
      calls.push({ context, resolve, reject })
    })
  return { calls, load }
}
