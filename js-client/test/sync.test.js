import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { EnvelopeError, createVersionGate, syncSubscription } from '../src/index.js'
import { FakeSubscription, controlledLoad } from './support/fake-subscription.js'
import { settle, waitFor } from './support/wait.js'

/** Start a synced subscription and record every event it emits, in order. */
function start(subscription, options) {
  const synced = syncSubscription(subscription, options)
  const events = []
  for (const name of ['update', 'drop', 'resync', 'ready', 'error']) {
    synced.on(name, (first, second) => events.push([name, first, second]))
  }
  const summary = () =>
    events.map(([name, first, second]) => {
      if (name === 'update' || name === 'drop') return `${name} ${first.key}@${first.version} ${second.reason}`
      if (name === 'error') return `error ${second.phase}`
      return `${name} ${first.reason}`
    })
  return { synced, events, summary }
}

describe('syncSubscription', () => {
  test('subscribes, buffers during the load, seeds, replays, then goes live', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })

    assert.equal(subscription.listenerCount('publication'), 1)
    await settle()
    assert.equal(subscription.subscribeCalls, 1)
    assert.equal(calls.length, 0, 'no load before the subscription is live')

    subscription.subscribed()
    assert.equal(calls.length, 1)
    assert.deepEqual(calls[0].context, { reason: 'initial' })

    subscription.publish('a', 1)
    subscription.publish('a', 2)
    subscription.publish('a', 3)
    subscription.publish('b', 5)
    subscription.publish('c', 1)
    assert.deepEqual(summary(), [], 'nothing is emitted while loading')

    calls[0].resolve({ items: [{ key: 'a', version: 2 }, { key: 'b', version: 5 }], extra: true })
    await settle()
    assert.deepEqual(summary(), [
      'drop a@1 stale',
      'drop a@2 duplicate',
      'update a@3 newer',
      'drop b@5 duplicate',
      'update c@1 new',
      'ready initial'
    ])

    subscription.publish('a', 4)
    subscription.publish('a', 4)
    assert.deepEqual(summary().slice(-2), ['update a@4 newer', 'drop a@4 duplicate'])
    assert.equal(synced.gate.version('a'), 4)
    synced.dispose()
  })

  test('an already subscribed subscription is loaded without subscribing again', async () => {
    const subscription = new FakeSubscription('subscribed')
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })
    await settle()
    assert.equal(subscription.subscribeCalls, 0)
    assert.equal(calls.length, 1)
    calls[0].resolve({ items: [] })
    await settle()
    assert.deepEqual(summary(), ['ready initial'])
    synced.dispose()
  })

  test('a failed recovery resyncs: buffer, reload, reset and reseed, replay', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary, events } = start(subscription, { load })
    await settle()
    subscription.subscribed()
    calls[0].resolve({ items: [{ key: 'a', version: 1 }, { key: 'gone', version: 9 }] })
    await settle()

    subscription.subscribed({ wasRecovering: true, recovered: true })
    assert.equal(calls.length, 1, 'a successful recovery needs no reload')

    subscription.subscribed({ wasRecovering: true, recovered: false })
    assert.equal(calls.length, 2)
    assert.deepEqual(calls[1].context, { reason: 'recovery-failed' })
    subscription.publish('a', 3)
    subscription.publish('a', 5)
    assert.equal(events.at(-1)[0], 'resync')

    calls[1].resolve({ items: [{ key: 'a', version: 3 }] })
    await settle()
    assert.deepEqual(summary().slice(1), [
      'resync recovery-failed',
      'drop a@3 duplicate',
      'update a@5 newer',
      'ready recovery-failed'
    ])
    assert.equal(synced.gate.version('gone'), undefined, 'the gate was reset before reseeding')
    synced.dispose()
  })

  test('a resubscribe of a non-recoverable subscription resyncs too', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })
    await settle()
    subscription.subscribed()
    calls[0].resolve({ items: [] })
    await settle()
    subscription.subscribed({ wasRecovering: false })
    assert.deepEqual(calls[1].context, { reason: 'resubscribed' })
    calls[1].resolve({ items: [] })
    await settle()
    assert.deepEqual(summary(), ['ready initial', 'resync resubscribed', 'ready resubscribed'])
    synced.dispose()
  })

  test('a resync during a load waits for it and ignores its result', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })
    await settle()
    subscription.subscribed()
    subscription.publish('a', 2)
    synced.resync()
    assert.equal(calls.length, 1, 'never two loads at once')

    calls[0].resolve({ items: [{ key: 'a', version: 9 }] })
    await settle()
    assert.equal(calls.length, 2)
    assert.deepEqual(calls[1].context, { reason: 'manual' })
    assert.equal(synced.gate.version('a'), undefined, 'the superseded result was not used')

    calls[1].resolve({ items: [{ key: 'a', version: 1 }] })
    await settle()
    assert.deepEqual(summary(), ['resync manual', 'update a@2 newer', 'ready manual'])
    synced.dispose()
  })

  test('a resync before the subscription is live waits for it', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })
    synced.resync()
    await settle()
    assert.equal(calls.length, 0, 'loading before subscribing would reopen the race')
    subscription.subscribed()
    assert.equal(calls.length, 1)
    calls[0].resolve({ items: [] })
    await settle()
    assert.deepEqual(summary(), ['resync manual', 'ready initial'])
    synced.dispose()
  })

  test('a failed load is reported and retried with growing, jittered delays', async () => {
    const subscription = new FakeSubscription('subscribed')
    let attempts = 0
    const load = async () => {
      attempts++
      if (attempts <= 3) throw new Error(`backend down (${attempts})`)
      return { items: [{ key: 'a', version: 1 }] }
    }
    const { synced, events, summary } = start(subscription, { load, minReloadDelay: 5, maxReloadDelay: 12 })
    await settle()
    subscription.publish('a', 2)
    await waitFor(() => summary().includes('ready initial'), { what: 'ready' })

    const errors = events.filter(([name]) => name === 'error')
    assert.deepEqual(errors.map(([, error]) => error.message), ['backend down (1)', 'backend down (2)', 'backend down (3)'])
    assert.deepEqual(errors.map(([, , context]) => context.attempt), [1, 2, 3])
    const [first, second, third] = errors.map(([, , context]) => context.retryIn)
    assert.ok(first >= 5 && first < 10, `first delay ${first}`)
    assert.ok(second >= 10 && second <= 12, `second delay ${second}`)
    assert.equal(third, 12, 'capped at maxReloadDelay')
    assert.deepEqual(summary().slice(3), ['update a@2 newer', 'ready initial'])
    synced.dispose()
  })

  test('a load result without items counts as a failure', async () => {
    const subscription = new FakeSubscription('subscribed')
    let attempts = 0
    const load = () => (++attempts === 1 ? { rows: [] } : { items: [] })
    const { synced, summary } = start(subscription, { load, minReloadDelay: 1, maxReloadDelay: 2 })
    await waitFor(() => summary().includes('ready initial'), { what: 'ready' })
    assert.deepEqual(summary(), ['error load', 'ready initial'])
    synced.dispose()
  })

  test('a rejection with no reason is still a failure', async () => {
    const subscription = new FakeSubscription('subscribed')
    let attempts = 0
    const load = () => (++attempts === 1 ? Promise.reject(undefined) : { items: [] })
    const { synced, summary } = start(subscription, { load, minReloadDelay: 1, maxReloadDelay: 2 })
    await waitFor(() => summary().includes('ready initial'), { what: 'ready' })
    assert.deepEqual(summary(), ['error load', 'ready initial'])
    synced.dispose()
  })

  test('malformed publications are reported and skipped, never thrown', async () => {
    const subscription = new FakeSubscription('subscribed')
    const { synced, events, summary } = start(subscription, { load: () => ({ items: [] }) })
    await waitFor(() => summary().includes('ready initial'))

    subscription.emit('publication', { channel: 'obj:test', data: 'not an envelope' })
    subscription.emit('publication', { channel: 'obj:test', data: { v: 2, key: 'a' } })
    subscription.emit('publication', { channel: 'obj:test' })
    subscription.publish('a', 1)

    const errors = events.filter(([name]) => name === 'error')
    assert.equal(errors.length, 3)
    for (const [, error, context] of errors) {
      assert.ok(error instanceof EnvelopeError)
      assert.equal(context.phase, 'parse')
      assert.equal(context.publication.channel, 'obj:test')
    }
    assert.match(errors[1][1].message, /unsupported major version/)
    assert.equal(summary().at(-1), 'update a@1 new')
    synced.dispose()
  })

  test("exceptions in the app's handlers are reported, never propagated", async () => {
    const subscription = new FakeSubscription('subscribed')
    const synced = syncSubscription(subscription, { load: () => ({ items: [] }) })
    const reported = []
    let updates = 0
    synced.on('update', () => {
      throw new Error('app bug')
    })
    synced.on('update', () => updates++)
    synced.on('ready', () => {
      throw new Error('ready bug')
    })
    synced.on('error', (error, context) => reported.push([error.message, context]))
    synced.on('error', () => {
      throw new Error('even the error handler is buggy')
    })
    await settle()

    assert.doesNotThrow(() => subscription.publish('a', 1))
    assert.equal(updates, 1, 'the next handler still ran')
    assert.deepEqual(reported, [
      ['ready bug', { phase: 'handler', event: 'ready' }],
      ['app bug', { phase: 'handler', event: 'update' }]
    ])
    synced.dispose()
  })

  test('a throwing custom gate is reported, not thrown into the SDK', async () => {
    const subscription = new FakeSubscription('subscribed')
    const gate = {
      ...createVersionGate(),
      accept() {
        throw new Error('gate bug')
      }
    }
    const { synced, summary } = start(subscription, { load: () => ({ items: [] }), gate })
    await waitFor(() => summary().includes('ready initial'))
    assert.doesNotThrow(() => subscription.publish('a', 1))
    assert.deepEqual(summary().slice(1), ['error listener'])
    synced.dispose()
  })

  test('a failing subscribe() is reported', async () => {
    const subscription = new FakeSubscription()
    subscription.subscribe = () => {
      throw new Error('no client')
    }
    const { synced, summary } = start(subscription, { load: () => ({ items: [] }) })
    await settle()
    assert.deepEqual(summary(), ['error subscribe'])
    synced.dispose()
  })

  test('an eviction drop tells the app which key to reload', async () => {
    const subscription = new FakeSubscription('subscribed')
    const load = () => ({ items: [{ key: 'a', version: 1 }, { key: 'b', version: 1 }] })
    const { synced, summary } = start(subscription, { load, gateOptions: { maxKeys: 1 } })
    await waitFor(() => summary().includes('ready initial'))
    subscription.publish('a', 2)
    assert.deepEqual(summary().slice(1), ['drop a@2 evicted'])
    synced.gate.seed('a', 2)
    subscription.publish('a', 3)
    assert.equal(summary().at(-1), 'update a@3 newer')
    synced.dispose()
  })

  test('too many buffered publications drop the buffer and redo the load', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load, maxBuffered: 3 })
    await settle()
    subscription.subscribed()
    for (let version = 1; version <= 4; version++) subscription.publish('a', version)
    subscription.publish('a', 5)
    calls[0].resolve({ items: [{ key: 'a', version: 1 }] })
    await settle()
    assert.equal(calls.length, 2)
    assert.deepEqual(calls[1].context, { reason: 'buffer-overflow' })
    calls[1].resolve({ items: [{ key: 'a', version: 4 }] })
    await settle()
    assert.deepEqual(summary(), ['resync buffer-overflow', 'update a@5 newer', 'ready buffer-overflow'])
    synced.dispose()
  })

  test('dispose() detaches everything and ignores a load still in flight', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })
    await settle()
    subscription.subscribed()
    synced.dispose()
    assert.equal(subscription.listenerCount('publication'), 0)
    assert.equal(subscription.listenerCount('subscribed'), 0)
    assert.equal(subscription.unsubscribeCalls, 0, "the app's subscription stays subscribed")
    calls[0].resolve({ items: [] })
    await settle()
    assert.deepEqual(summary(), [])
    synced.dispose()
  })

  test('dispose() stops pending retries and can unsubscribe when asked', async () => {
    const subscription = new FakeSubscription('subscribed')
    let attempts = 0
    const load = () => {
      attempts++
      throw new Error('down')
    }
    const synced = syncSubscription(subscription, { load, minReloadDelay: 5, unsubscribeOnDispose: true })
    synced.on('error', () => {})
    await settle()
    assert.equal(attempts, 1)
    synced.dispose()
    await settle(30)
    assert.equal(attempts, 1)
    assert.equal(subscription.unsubscribeCalls, 1)
  })

  test('dispose() before the first tick neither subscribes nor loads', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    syncSubscription(subscription, { load }).dispose()
    await settle()
    assert.equal(subscription.subscribeCalls, 0)
    assert.equal(calls.length, 0)
  })

  test('on() returns an unbind function', async () => {
    const subscription = new FakeSubscription('subscribed')
    const synced = syncSubscription(subscription, { load: () => ({ items: [] }) })
    const seen = []
    const unbind = synced.on('update', envelope => seen.push(envelope.version))
    await settle()
    subscription.publish('a', 1)
    unbind()
    unbind()
    subscription.publish('a', 2)
    assert.deepEqual(seen, [1])
    synced.dispose()
  })

  test('load is required', () => {
    assert.throws(() => syncSubscription(new FakeSubscription(), {}), TypeError)
  })
})
