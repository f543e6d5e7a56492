import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { EnvelopeError, createVersionGate, syncSubscription } from '../src/index.js'
import { FakeSubscription, controlledLoad } from './support/fake-subscription.js'
import { settle, waitFor } from './support/wait.js'

/** Start a synced subscription and record every event it emits, in order. */
function start(subscription, options) {
  const synced = syncSubscription(subscription, options)
  const events = []
  for (const name of ['update', 'delete', 'drop', 'resync', 'ready', 'error']) {
    synced.on(name, (first, second) => events.push([name, first, second]))
  }
  const summary = () =>
    events.map(([name, first, second]) => {
      if (name === 'update' || name === 'drop' || name === 'delete') {
        return `${name} ${first.key}@${first.version} ${second.reason}`
      }
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
    assert.equal(calls[0].context.reason, 'initial')

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
    assert.equal(calls[1].context.reason, 'recovery-failed')
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
    assert.ok(synced.gate.isDeleted('gone'), 'absent from the fresh snapshot: gone, kept as a tombstone')
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
    assert.equal(calls[1].context.reason, 'resubscribed')
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
    assert.equal(calls[1].context.reason, 'manual')
    assert.equal(synced.gate.version('a'), undefined, 'the superseded result was not used')

    // a@2 arrived before this load was called: its snapshot has it, a@3 arrives during it.
    subscription.publish('a', 3)
    calls[1].resolve({ items: [{ key: 'a', version: 2 }] })
    await settle()
    assert.deepEqual(summary(), ['resync manual', 'update a@3 newer', 'ready manual'])
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
      subscription.publish('a', 2) // committed after the snapshot's read
      return { items: [{ key: 'a', version: 1 }] }
    }
    const { synced, events, summary } = start(subscription, { load, minReloadDelay: 5, maxReloadDelay: 12 })
    await settle()
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
    calls[0].resolve({ items: [{ key: 'a', version: 1 }] })
    await settle()
    assert.equal(calls.length, 2)
    assert.equal(calls[1].context.reason, 'buffer-overflow')
    subscription.publish('a', 5)
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

  test('a delete is emitted as delete and a late older update of it is dropped', async () => {
    const subscription = new FakeSubscription('subscribed')
    const load = () => ({ items: [{ key: 'a', version: 2 }, { key: 'b', version: 1 }] })
    const { synced, summary, events } = start(subscription, { load })
    await waitFor(() => summary().includes('ready initial'))
    subscription.publishDelete('a', 3)
    subscription.publish('a', 2)
    subscription.publishDelete('a', 3)
    subscription.publishDelete('b', 2)
    subscription.publish('b', 3)
    assert.deepEqual(summary().slice(1), [
      'delete a@3 newer',
      'drop a@2 stale',
      'drop a@3 duplicate',
      'delete b@2 newer',
      'update b@3 newer'
    ])
    const [, deleted] = events.find(([name]) => name === 'delete')
    assert.equal(deleted.deleted, true)
    assert.equal(deleted.data, null)
    synced.dispose()
  })

  test('a reload reconciles tombstones in the snapshot and keys missing from it', async () => {
    const subscription = new FakeSubscription('subscribed')
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })
    await settle()
    calls[0].resolve({ items: [{ key: 'a', version: 1 }, { key: 'b', version: 1 }, { key: 'c', version: 1 }] })
    await settle()
    synced.resync()
    calls[1].resolve({ items: [{ key: 'a', version: 5, deleted: true }, { key: 'c', version: 1 }] })
    await settle()
    subscription.publish('a', 4)
    subscription.publish('b', 1)
    subscription.publish('b', 2)
    assert.deepEqual(summary().slice(-3), ['drop a@4 stale', 'drop b@1 duplicate', 'update b@2 newer'])
    synced.dispose()
  })

  test('what arrived before a reload is left to its snapshot: a deleted object does not come back', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced, summary } = start(subscription, { load })
    await settle()
    subscription.subscribed()
    subscription.publish('a', 8) // buffered during the first load
    // The connection drops; a's delete (version 9) is lost with it; recovery fails.
    subscription.subscribed({ wasRecovering: true, recovered: false })
    calls[0].resolve({ items: [{ key: 'a', version: 7 }] })
    await settle()
    calls[1].resolve({ items: [] }) // read after the delete, which it does not list
    await settle()
    assert.deepEqual(summary(), ['resync recovery-failed', 'ready recovery-failed'])
    synced.dispose()
  })

  test('state and ready() follow loads, resyncs and dispose', async () => {
    const subscription = new FakeSubscription()
    const { calls, load } = controlledLoad()
    const { synced } = start(subscription, { load })
    assert.equal(synced.state, 'loading')
    let first = false
    synced.ready().then(() => (first = true))
    await settle()
    subscription.subscribed()
    assert.equal(synced.state, 'loading')
    calls[0].resolve({ items: [] })
    await settle()
    assert.equal(first, true)
    assert.equal(synced.state, 'live')
    await synced.ready()

    synced.resync()
    assert.equal(synced.state, 'resyncing')
    const pending = synced.ready()
    synced.dispose()
    assert.equal(synced.state, 'disposed')
    await assert.rejects(pending, /disposed/)
    await assert.rejects(synced.ready(), /disposed/)
  })

  test('a superseded load and a disposed one are aborted through their signal', async () => {
    const subscription = new FakeSubscription('subscribed')
    const { calls, load } = controlledLoad()
    const { synced } = start(subscription, { load })
    await settle()
    const { signal } = calls[0].context
    assert.equal(signal.aborted, false)
    synced.resync()
    assert.equal(signal.aborted, true, 'superseded')
    calls[0].reject(signal.reason)
    await settle()
    assert.equal(calls.length, 2)
    synced.dispose()
    assert.equal(calls[1].context.signal.aborted, true, 'disposed')
  })

  test('unsubscribed by the server is reported and ends ready(); the app unsubscribing is not an error', async () => {
    const subscription = new FakeSubscription('subscribed')
    const { synced, summary, events } = start(subscription, { load: () => ({ items: [] }) })
    await waitFor(() => synced.state === 'live')
    subscription.ended(2500, 'unauthorized')
    assert.equal(synced.state, 'unsubscribed')
    await assert.rejects(synced.ready(), /unsubscribed/)
    const [, error, context] = events.find(([name]) => name === 'error')
    assert.match(error.message, /unauthorized \(code 2500\)/)
    assert.deepEqual(context, { phase: 'unsubscribed', code: 2500, reason: 'unauthorized' })

    subscription.subscribed()
    await waitFor(() => synced.state === 'live')
    assert.deepEqual(summary().slice(-2), ['resync resubscribed', 'ready resubscribed'])
    subscription.unsubscribe()
    assert.equal(synced.state, 'unsubscribed')
    assert.equal(events.filter(([name]) => name === 'error').length, 1)
    synced.dispose()
  })

  test('a map or shared-poll subscription is refused', () => {
    const map = new FakeSubscription()
    map.remove = () => {}
    assert.throws(() => syncSubscription(map, { load: () => ({ items: [] }) }), /not a stream subscription/)
    const poll = new FakeSubscription()
    poll.track = () => {}
    assert.throws(() => syncSubscription(poll, { load: () => ({ items: [] }) }), /not a stream subscription/)
  })
})

/** A fetch for reloadKey that resolves when the test says, applying into `store`. */
function controlledFetch(store) {
  const calls = []
  const fetch = context =>
    new Promise((resolve, reject) => {
      calls.push({
        context,
        reject,
        resolve: version =>
          resolve(
            version === undefined
              ? { deleted: true, apply: () => store.delete(context.key) }
              : { version, apply: () => store.set(context.key, version) }
          )
      })
    })
  return { calls, fetch }
}

describe('syncSubscription: reloadKey', () => {
  /** Live with `a` and `b` loaded at 1 and a gate that remembers one key: `a` is evicted. */
  async function evicted() {
    const subscription = new FakeSubscription('subscribed')
    const store = new Map([['a', 1], ['b', 1]])
    const { calls, load } = controlledLoad()
    const started = start(subscription, { load, gateOptions: { maxKeys: 1 } })
    started.synced.on('update', ({ key, version }) => store.set(key, version))
    await settle()
    calls[0].resolve({ items: [{ key: 'a', version: 1 }, { key: 'b', version: 1 }] })
    await settle()
    subscription.publish('a', 2)
    assert.equal(started.summary().at(-1), 'drop a@2 evicted')
    return { ...started, subscription, store, loads: calls }
  }

  test('overlapping reloads landing in reverse order never move the store backwards', async () => {
    const { synced, subscription, store, summary } = await evicted()
    const { calls, fetch } = controlledFetch(store)
    const first = synced.reloadKey('a', fetch)
    const second = synced.reloadKey('a', fetch)
    await settle()
    subscription.publish('a', 4) // arrives during the fetches: waits, then meets the gate
    subscription.publish('a', 3)
    calls[1].resolve(3)
    assert.equal(await second, true)
    assert.equal(store.get('a'), 3)
    calls[0].resolve(2) // the older read lands last
    assert.equal(await first, false)
    assert.equal(store.get('a'), 4)
    assert.equal(synced.gate.version('a'), 4)
    assert.deepEqual(summary().slice(-2), ['update a@4 newer', 'drop a@3 stale'])
    synced.dispose()
  })

  test('a reload racing a full resync is judged after the snapshot', async () => {
    const { synced, store, loads } = await evicted()
    const { calls, fetch } = controlledFetch(store)
    const reload = synced.reloadKey('a', fetch)
    synced.resync()
    await settle()
    calls[0].resolve(2) // read before the snapshot below
    await settle()
    store.set('a', 3)
    loads[1].resolve({ items: [{ key: 'a', version: 3 }, { key: 'b', version: 1 }] })
    assert.equal(await reload, false)
    assert.equal(store.get('a'), 3)
    synced.dispose()
  })

  test('an object the backend no longer has is removed and its key forgotten', async () => {
    const { synced, subscription, store, summary } = await evicted()
    const { calls, fetch } = controlledFetch(store)
    const reload = synced.reloadKey('a', fetch)
    calls[0].resolve(undefined)
    assert.equal(await reload, true)
    assert.equal(store.has('a'), false)
    subscription.publish('a', 1)
    assert.equal(summary().at(-1), 'drop a@1 evicted', 'a later update is checked, never taken as new')
    synced.dispose()
  })

  test('an absent result read before a newer one landed is not applied', async () => {
    const { synced, store } = await evicted()
    const { calls, fetch } = controlledFetch(store)
    const first = synced.reloadKey('a', fetch)
    const second = synced.reloadKey('a', fetch)
    await settle()
    calls[1].resolve(10) // re-created: read last, lands first
    assert.equal(await second, true)
    calls[0].resolve(undefined) // "absent", read while it was deleted: older, version unknown
    assert.equal(await first, false)
    assert.equal(store.get('a'), 10)
    synced.dispose()
  })

  test('a failed fetch or apply is reported and the waiting publications go on', async () => {
    const { synced, subscription, store, summary } = await evicted()
    const { calls, fetch } = controlledFetch(store)
    const reload = synced.reloadKey('a', fetch)
    subscription.publish('a', 3)
    calls[0].reject(new Error('backend down'))
    assert.equal(await reload, false)
    assert.deepEqual(summary().slice(-2), ['error reload', 'drop a@3 evicted'])
    const broken = synced.reloadKey('a', () => ({
      version: 3,
      apply() {
        throw new Error('store bug')
      }
    }))
    assert.equal(await broken, false)
    assert.equal(summary().at(-1), 'error reload')
    synced.dispose()
  })

  test('dispose aborts a fetch in flight, which then resolves false', async () => {
    const { synced, store } = await evicted()
    const { calls, fetch } = controlledFetch(store)
    const reload = synced.reloadKey('a', fetch)
    await settle()
    synced.dispose()
    assert.equal(calls[0].context.signal.aborted, true)
    calls[0].resolve(5)
    assert.equal(await reload, false)
    assert.equal(store.get('a'), 1)
    assert.equal(await synced.reloadKey('a', fetch), false)
  })

  test('a buffer overflow keeps a finished fetch', async () => {
    const subscription = new FakeSubscription('subscribed')
    const store = new Map()
    const { calls, load } = controlledLoad()
    const { synced } = start(subscription, { load, maxBuffered: 2 })
    await settle()
    const reload = synced.reloadKey('a', () => ({ version: 7, apply: () => store.set('a', 7) }))
    await settle()
    for (let version = 1; version <= 4; version++) subscription.publish('b', version)
    calls[0].reject(new Error('aborted'))
    await settle()
    calls[1].resolve({ items: [{ key: 'a', version: 5 }, { key: 'b', version: 4 }] })
    assert.equal(await reload, true, 'kept, and judged against the snapshot')
    assert.equal(store.get('a'), 7)
    synced.dispose()
  })
})
