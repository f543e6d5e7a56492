/**
 * Python publishes, the relay delivers through a real Centrifugo, centrifuge-js
 * (on Node, with `ws`) receives, and syncSubscription + the version gate keep
 * the newest version per key: an injected late duplicate and an injected older
 * version are dropped, a delete removes its key and an older update arriving
 * after it stays dropped, and a recovery that really fails (more publications
 * missed than the channel's history holds) triggers a reload.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'

import { Centrifuge } from 'centrifuge'
import WebSocket from 'ws'

import { shardFor, syncSubscription } from '../src/index.js'
import { publishWithPython, startDevstack, streamTop } from './support/services.js'
import { waitFor } from './support/wait.js'

const KEYS = ['order:1', 'order:2', 'user:7', 'Ünïcödé-ключ']

describe('node integration: Python publisher -> relay -> Centrifugo -> centrifuge-js', { timeout: 180000 }, () => {
  let devstack
  const clients = []
  const newClient = () => {
    const client = new Centrifuge(devstack.ws_url, { websocket: WebSocket })
    clients.push(client)
    return client
  }

  before(async () => {
    // The relay sends every version (freshness 'all'): the injected stale and
    // duplicate versions must reach the gate, which is what this test checks.
    devstack = await startDevstack({ shards: 4, freshness: '*=all' })
  })

  after(async () => {
    for (const client of clients) client.disconnect()
    await devstack?.stop()
  })

  test('initial sync, live updates, injected duplicate and stale dropped', async t => {
    const channel = `obj:test-${randomUUID()}`
    const database = new Map()
    const publish = async messages => {
      const published = await publishWithPython(devstack, messages.map(message => ({ channel, ...message })))
      for (const { key, version } of messages) {
        if (version > (database.get(key) ?? -1)) database.set(key, version)
      }
      return published
    }
    const update = (key, version) => ({ key, version, data: { key, version } })
    const state = new Map()
    const drops = []
    const errors = []
    let finished = false
    t.after(() => {
      if (finished) return
      const relayLog = devstack.relay_log ? readFileSync(devstack.relay_log, 'utf8').slice(-4000) : ''
      t.diagnostic(`state ${JSON.stringify([...state])} drops ${JSON.stringify(drops)} errors ${errors.map(String)}`)
      t.diagnostic(`relay log tail:\n${relayLog}`)
    })

    await publish(KEYS.flatMap(key => [update(key, 1), update(key, 2)]))
    let delivered = 0
    await waitFor(() => delivered === KEYS.length * 2, {
      timeoutMs: 30000,
      intervalMs: 100,
      what: 'the relay to deliver the history before subscribing',
      poll: async () => {
        delivered = await streamTop(devstack, channel)
      }
    })

    const centrifuge = newClient()
    const subscription = centrifuge.newSubscription(channel, { recoverable: true, positioned: true })
    let received = 0
    subscription.on('publication', () => received++)

    let readyCount = 0
    let loads = 0
    const synced = syncSubscription(subscription, {
      async load() {
        loads++
        // Updates committed while the snapshot is being read: they arrive
        // during the load, are buffered, and must not be applied twice.
        await publish(KEYS.map(key => update(key, 3)))
        await waitFor(() => received >= KEYS.length, { timeoutMs: 20000, what: 'publications during load' })
        for (const key of KEYS) state.set(key, { version: database.get(key), data: { key, version: database.get(key) } })
        return { items: KEYS.map(key => ({ key, version: database.get(key) })) }
      }
    })
    synced.on('update', envelope => {
      assert.equal(envelope.shard, shardFor(envelope.key, devstack.shards), 'JS routing equals Python routing')
      state.set(envelope.key, { version: envelope.version, data: envelope.data })
    })
    synced.on('drop', (envelope, { reason }) => drops.push(`${envelope.key}@${envelope.version} ${reason}`))
    synced.on('error', (error, context) => errors.push([error, context]))
    synced.on('ready', () => readyCount++)

    centrifuge.connect()
    await waitFor(() => readyCount === 1, { timeoutMs: 30000, what: 'initial sync' })
    assert.equal(loads, 1)
    assert.deepEqual(drops.sort(), KEYS.map(key => `${key}@3 duplicate`).sort(), 'buffered copies of loaded versions')

    await publish(KEYS.flatMap(key => [update(key, 4), update(key, 5)]))
    await waitFor(() => KEYS.every(key => state.get(key).version === 5), { timeoutMs: 30000, what: 'live updates' })

    drops.length = 0
    const [target, other] = KEYS
    const injected = await publish([
      { key: target, version: 5, data: { injected: 'late duplicate' }, idempotency_key: `dup-${randomUUID()}` },
      { key: other, version: 2, data: { injected: 'older version' }, idempotency_key: `old-${randomUUID()}` }
    ])
    assert.deepEqual(injected.map(({ shard, key }) => shard === shardFor(key, devstack.shards)), [true, true])
    await waitFor(() => drops.length >= 2, { timeoutMs: 30000, what: 'the injected messages' })
    assert.deepEqual(drops.sort(), [`${target}@5 duplicate`, `${other}@2 stale`].sort())

    for (const key of KEYS) {
      assert.deepEqual(state.get(key), { version: 5, data: { key, version: 5 } }, key)
      assert.equal(synced.gate.version(key), 5)
    }
    const stats = synced.gate.stats()
    assert.equal(stats.accepted, KEYS.length * 2)
    assert.equal(stats.duplicate, KEYS.length + 1)
    assert.equal(stats.stale, 1)
    assert.equal(stats.evicted, 0)
    assert.deepEqual(errors, [])

    synced.dispose()
    subscription.unsubscribe()
    finished = true
  })

  test('a delete reaches the subscriber as it was enqueued and the gate removes the key', async () => {
    const channel = `obj:test-${randomUUID()}`
    const centrifuge = newClient()
    const subscription = centrifuge.newSubscription(channel, { recoverable: true, positioned: true })
    const state = new Map([['a', 1], ['b', 1]])
    const seen = []
    const raw = []
    subscription.on('publication', ctx => raw.push(ctx.data))
    const synced = syncSubscription(subscription, { load: () => ({ items: [...state].map(([key, version]) => ({ key, version })) }) })
    synced.on('update', ({ key, version }) => state.set(key, version))
    synced.on('delete', envelope => {
      seen.push(`delete ${envelope.key}@${envelope.version} ${envelope.deleted} ${envelope.data}`)
      state.delete(envelope.key)
    })
    synced.on('drop', ({ key, version }, { reason }) => seen.push(`drop ${key}@${version} ${reason}`))
    centrifuge.connect()
    await synced.ready()

    await publishWithPython(devstack, [
      { channel, key: 'a', version: 2, deleted: true },
      // An older update, late (a fresh idempotency key, so Centrifugo delivers it).
      { channel, key: 'a', version: 1, data: { late: true }, idempotency_key: `late-${randomUUID()}` },
      { channel, key: 'b', version: 2, deleted: true },
      { channel, key: 'b', version: 3, data: { again: true } }
    ])
    await waitFor(() => seen.length === 3 && state.get('b') === 3, { timeoutMs: 30000, what: 'the deletes' })
    assert.deepEqual(seen.sort(), ['delete a@2 true null', 'delete b@2 true null', 'drop a@1 stale'])
    const deleteOfA = raw.find(data => data.key === 'a' && data.version === 2)
    assert.deepEqual(Object.keys(deleteOfA), ['v', 'channel', 'key', 'version', 'seq', 'shard', 'ts', 'data', 'deleted'])
    assert.equal(deleteOfA.data, null)
    assert.equal(deleteOfA.deleted, true)
    assert.deepEqual([...state], [['b', 3]])
    assert.equal(synced.gate.isDeleted('a'), true)
    synced.dispose()
  })

  test('a recovery that fails for real (history overflowed) reloads and converges', async () => {
    const channel = `obj:test-${randomUUID()}`
    const database = new Map([['doc', 1]])
    const HISTORY_SIZE = 1000 // the devstack's obj namespace
    await publishWithPython(devstack, [{ channel, key: 'doc', version: 1, data: { version: 1 } }])

    const centrifuge = newClient()
    const subscription = centrifuge.newSubscription(channel, { recoverable: true, positioned: true })
    const reasons = []
    const state = new Map()
    const synced = syncSubscription(subscription, {
      load: ({ reason }) => {
        reasons.push(reason)
        for (const [key, version] of database) state.set(key, version)
        return { items: [...database].map(([key, version]) => ({ key, version })) }
      }
    })
    synced.on('update', ({ key, version }) => state.set(key, version))
    synced.on('resync', ({ reason }) => reasons.push(`resync ${reason}`))
    centrifuge.connect()
    await waitFor(() => reasons.length === 1 && subscription.state === 'subscribed', {
      timeoutMs: 20000,
      what: 'the initial load'
    })

    centrifuge.disconnect()
    const missed = Array.from({ length: HISTORY_SIZE + 50 }, (_, i) => ({
      channel,
      key: `bulk:${i % 10}`,
      version: 1 + Math.floor(i / 10),
      data: null
    }))
    missed.push({ channel, key: 'doc', version: 2, data: { version: 2 } })
    await publishWithPython(devstack, missed)
    for (const { key, version } of missed) database.set(key, Math.max(database.get(key) ?? 0, version))
    let delivered = 0
    await waitFor(() => delivered === 1 + missed.length, {
      timeoutMs: 30000,
      intervalMs: 100,
      what: 'the relay to deliver the missed publications',
      poll: async () => {
        delivered = await streamTop(devstack, channel)
      }
    })

    centrifuge.connect()
    await waitFor(() => reasons.length === 3, { timeoutMs: 20000, what: 'the resync' })
    assert.deepEqual(reasons, ['initial', 'resync recovery-failed', 'recovery-failed'])
    assert.deepEqual(Object.fromEntries(state), Object.fromEntries(database))

    await publishWithPython(devstack, [{ channel, key: 'doc', version: 3, data: { version: 3 } }])
    await waitFor(() => state.get('doc') === 3, { timeoutMs: 20000, what: 'a live update after the resync' })
    synced.dispose()
  })
})
