/**
 * Randomized property test of syncSubscription + the version gate, thousands
 * of seeds: a backend commits updates, deletes and re-creations of a few keys;
 * the network delivers every envelope at least once, late, duplicated and
 * reordered, and loses some during a disconnect that recovery cannot repair;
 * loads and single-key reloads read the backend at random later moments; the
 * gate remembers fewer keys than there are, so keys are evicted and the app
 * calls reloadKey on every 'evicted' drop.
 *
 * Properties: what the app shows of a key never goes backwards (every change
 * it makes carries a version at least as new as the last it showed), and once
 * everything is delivered the app shows exactly the backend's live objects.
 *
 * Half of the seeds load snapshots that list tombstones (deleted objects with
 * their version), and the network may then re-send any old version at any
 * time. The other half load live objects only: a snapshot then cannot say
 * *when* a missing object was deleted, so the network behaves like a relay
 * with monotonic delivery (never sends a version older than one it sent for
 * that key). Without either, a late re-send of an update older than a delete
 * that only a reload told the page about would bring the object back (see
 * docs/client.md, deletes).
 *
 * Between the backend and the network sits the relay's freshness (relay(), the
 * model of the relay's relay/freshness.py): every version ('all'), never one
 * older than it delivered ('monotonic', the relay's default), or also only the
 * newest version of a key it has in hand ('latest'), dropping the rest as
 * superseded; its memory may forget keys (a few keys per generation, as the
 * version memory in Redis does with many). With tombstones any of these may
 * run; without, the relay is monotonic or latest and never forgets.
 *
 * The Python twin runs the same model (tests/client/test_property.py).
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { syncSubscription } from '../src/index.js'
import { FakeSubscription } from './support/fake-subscription.js'

const SEEDS = 2000
const KEYS = ['a', 'b', 'c', 'd', 'e', 'f']

/** mulberry32: a small seeded PRNG, so a failing seed can be replayed. */
function random(seed) {
  let state = seed >>> 0
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return { next, below: n => Math.floor(next() * n), chance: p => next() < p }
}

/** Let the helper's promise chains run after a load or fetch settled (no timers are involved). */
async function flush() {
  for (let i = 0; i < 8; i++) await null
}

/**
 * The relay's freshness as the subscriber sees it: superseded(message, inFlight)
 * says whether the relay drops the envelope instead of sending it, and remembers
 * it if not. memory: keys per generation (undefined: it never forgets).
 */
function relay(mode, memory) {
  let current = new Map()
  let old = new Map()
  const superseded = ({ key, version }, inFlight) => {
    if (mode === 'all') return false
    if (mode === 'latest' && inFlight.some(m => m.key === key && m.version > version)) return true
    // Equal versions pass: a redelivery after a crash repeats one.
    if (version < Math.max(current.get(key) ?? -1, old.get(key) ?? -1)) return true
    current.set(key, Math.max(version, current.get(key) ?? -1))
    if (memory !== undefined && current.size >= memory) {
      old = current
      current = new Map()
    }
    return false
  }
  return { superseded }
}

async function run(seed) {
  const rng = random(seed)
  const log = []
  // Recorded, then thrown by check(): the helper catches what its handlers throw.
  const problems = []
  const fail = message => problems.push(`seed ${seed}: ${message}\n${log.slice(-40).join('\n')}`)
  const check = () => {
    if (problems.length) throw new Error(problems[0])
  }

  // The backend: key -> {version, deleted}; versions keep counting across deletes.
  const backend = new Map()
  const readBackend = () => [...backend].map(([key, row]) => ({ key, ...row }))

  // The app: its store, and the newest version it has shown of each key.
  const store = new Map()
  const shown = new Map()
  const show = (key, version, what) => {
    if (version !== undefined) {
      if (version < (shown.get(key) ?? -1)) fail(`${what} moved ${key} back from ${shown.get(key)} to ${version}`)
      shown.set(key, version)
    }
  }

  const tombstones = rng.chance(0.5)
  const modes = tombstones ? ['all', 'monotonic', 'latest'] : ['monotonic', 'latest']
  const memories = tombstones ? [undefined, 1, 2, 3] : [undefined]
  const freshness = relay(modes[rng.below(modes.length)], memories[rng.below(memories.length)])
  const subscription = new FakeSubscription()
  const pendingLoads = []
  const pendingFetches = []
  const synced = syncSubscription(subscription, {
    gateOptions: { maxKeys: 1 + rng.below(KEYS.length), evictedFilterBits: 64 },
    maxBuffered: 5 + rng.below(40),
    load: ({ reason, signal }) => new Promise((resolve, reject) => pendingLoads.push({ reason, signal, resolve, reject }))
  })
  synced.on('update', ({ key, version }) => {
    log.push(`update ${key}@${version}`)
    if (version <= (store.get(key) ?? -1)) fail(`update ${key}@${version} is not newer than ${store.get(key)}`)
    show(key, version, 'an update')
    store.set(key, version)
  })
  synced.on('delete', ({ key, version }) => {
    log.push(`delete ${key}@${version}`)
    show(key, version, 'a delete')
    store.delete(key)
  })
  synced.on('drop', ({ key, version }, { reason }) => {
    log.push(`drop ${key}@${version} ${reason}`)
    if (reason !== 'evicted') return
    synced.reloadKey(key, ({ key: wanted }) => new Promise(resolve => pendingFetches.push({ key: wanted, resolve })))
  })
  synced.on('error', error => fail(`error ${error}`))

  /** Resolve a pending load or fetch: it reads the backend now. */
  const completeLoad = async index => {
    const [load] = pendingLoads.splice(index, 1)
    if (load.signal.aborted && rng.chance(0.5)) {
      load.reject(load.signal.reason) // superseded: stop
      return flush()
    }
    const items = readBackend()
    log.push(`load ${load.reason}: ${JSON.stringify(items)}`)
    const snapshot = tombstones ? items : items.filter(item => !item.deleted)
    // Without tombstones the app cannot know when a missing object was deleted:
    // an older update still on its way may show it once more, until its delete
    // arrives (the documented limit). Its history starts over.
    if (!tombstones) for (const { key, deleted } of items) if (deleted) shown.delete(key)
    store.clear()
    for (const { key, version, deleted } of snapshot) {
      show(key, version, 'a load')
      if (!deleted) store.set(key, version)
    }
    load.resolve({ items: snapshot })
    await flush()
  }
  const completeFetch = async index => {
    const [{ key, resolve }] = pendingFetches.splice(index, 1)
    const row = backend.get(key)
    const tombstoneKnown = row?.deleted && rng.chance(0.5)
    log.push(`fetch ${key}: ${JSON.stringify(row)}`)
    if (!row || row.deleted) {
      const version = tombstoneKnown ? row.version : undefined
      resolve({ version, deleted: true, apply: () => (log.push(`apply delete ${key}`), show(key, version, 'a reload'), store.delete(key)) })
    } else {
      resolve({ version: row.version, apply: () => (log.push(`apply ${key}@${row.version}`), show(key, row.version, 'a reload'), store.set(key, row.version)) })
    }
    await flush()
  }

  // The network: envelopes in flight, each to be delivered once or more.
  let inFlight = []
  let connected = false
  const commit = () => {
    const key = KEYS[rng.below(KEYS.length)]
    const row = backend.get(key)
    const deleted = row !== undefined && !row.deleted && rng.chance(0.3)
    const version = (row?.version ?? 0) + 1
    backend.set(key, { version, deleted })
    for (let copies = rng.chance(0.2) ? 2 : 1; copies > 0; copies--) inFlight.push({ key, version, deleted })
  }
  const deliver = () => {
    const [message] = inFlight.splice(rng.below(inFlight.length), 1)
    if (freshness.superseded(message, inFlight)) {
      log.push(`superseded ${message.key}@${message.version}`)
      return
    }
    if (!connected) return // lost while disconnected: only a reload repairs it
    if (message.deleted) subscription.publishDelete(message.key, message.version)
    else subscription.publish(message.key, message.version)
    if (rng.chance(0.1)) inFlight.push(message) // delivered again later
  }

  await flush()
  subscription.subscribed()
  connected = true
  for (let step = 0; step < 120; step++) {
    const roll = rng.next()
    if (roll < 0.35) commit()
    else if (roll < 0.7 && inFlight.length) deliver()
    else if (roll < 0.8 && pendingLoads.length) await completeLoad(rng.below(pendingLoads.length))
    else if (roll < 0.9 && pendingFetches.length) await completeFetch(rng.below(pendingFetches.length))
    else if (roll < 0.93) {
      connected = !connected // a disconnect loses what is delivered meanwhile
      if (connected) subscription.subscribed({ wasRecovering: true, recovered: false })
    } else if (roll < 0.95) synced.resync()
    check()
  }
  if (!connected) subscription.subscribed({ wasRecovering: true, recovered: false })
  connected = true
  while (inFlight.length || pendingLoads.length || pendingFetches.length) {
    if (inFlight.length) deliver()
    else if (pendingLoads.length) await completeLoad(0)
    else await completeFetch(0)
    check()
  }

  const expected = new Map([...backend].filter(([, row]) => !row.deleted).map(([key, row]) => [key, row.version]))
  if (JSON.stringify([...store].sort()) !== JSON.stringify([...expected].sort())) {
    fail(`store ${JSON.stringify([...store].sort())} != backend ${JSON.stringify([...expected].sort())}`)
  }
  check()
  assert.equal(synced.state, 'live')
  synced.dispose()
}

describe('syncSubscription: randomized property test', () => {
  test(`${SEEDS} seeds converge and never go backwards`, async () => {
    for (let seed = 1; seed <= SEEDS; seed++) await run(seed)
  })
})
