// Compiled by `npm run typecheck` (tsc --noEmit), never run: it proves the
// hand-written declarations fit real usage, including a real centrifuge-js Subscription.
import { Centrifuge } from 'centrifuge'
import {
  createVersionGate,
  EnvelopeError,
  MAX_DEPTH,
  parseEnvelope,
  shardFor,
  syncSubscription,
  type Envelope,
  type EnvelopeErrorReason,
  type FetchedObject,
  type GateStats,
  type SyncState,
  type SyncedSubscription
} from 'centrifugo-async-client'

interface Todo {
  title: string
  done: boolean
}

const centrifuge = new Centrifuge('ws://127.0.0.1:8000/connection/websocket')
const subscription = centrifuge.newSubscription('obj:todos', { recoverable: true, positioned: true })
const store = new Map<string, { version: number; todo: Todo }>()

const synced: SyncedSubscription<Todo> = syncSubscription<Todo>(subscription, {
  gateOptions: { maxKeys: 500 },
  minReloadDelay: 100,
  async load({ reason, signal }) {
    const response = await fetch(`/todos?reason=${reason}`, { signal, cache: 'no-store' })
    const body = (await response.json()) as {
      rows: { key: string; version: number; todo: Todo }[]
      deleted: { key: string; version: number }[]
    }
    if (signal.aborted) throw signal.reason
    for (const row of body.rows) store.set(row.key, row)
    return { items: [...body.rows, ...body.deleted.map(tomb => ({ ...tomb, deleted: true }))] }
  }
})

const unbind: () => void = synced.on('update', (envelope, { reason }) => {
  const title: string = envelope.data.title
  const why: 'new' | 'newer' = reason
  store.set(envelope.key, { version: envelope.version, todo: envelope.data })
  console.log(title, why)
})
synced.on('delete', (envelope, { reason }) => {
  const gone: true | undefined = envelope.deleted
  const data: null = envelope.data
  store.delete(envelope.key)
  console.log(gone, data, reason)
})
synced.on('drop', (envelope, { reason }) => {
  if (reason !== 'evicted') return
  const applied: Promise<boolean> = synced.reloadKey(envelope.key, async ({ key, signal }): Promise<FetchedObject> => {
    const response = await fetch(`/todos/${key}`, { signal })
    if (response.status === 404) return { deleted: true, apply: () => store.delete(key) }
    const row = (await response.json()) as { key: string; version: number; todo: Todo }
    return { version: row.version, apply: () => store.set(key, row) }
  })
  void applied
})
synced.on('error', (error, context) => {
  if (context.phase === 'parse') console.warn(context.publication.data, error)
  if (context.phase === 'load') console.warn(context.retryIn)
})
synced.on('resync', ({ reason }) => console.log(reason))
synced.on('ready', ({ reason }) => console.log(reason))
synced.on('error', (error, context) => {
  if (context.phase === 'unsubscribed') console.log(context.code, context.reason)
  if (context.phase === 'reload') console.log(context.key)
})
const state: SyncState = synced.state
void synced.ready().then(() => console.log(state))
unbind()
synced.resync()
synced.dispose()

const gate = createVersionGate({ maxKeys: 10, evictedFilterBits: 1024 })
const advanced: boolean = gate.seed('a', 1)
gate.seed('b', 3, true)
gate.replace([{ key: 'a', version: 1 }, { key: 'b', version: 3, deleted: true }])
gate.forget('c')
const tombstone: boolean = gate.isDeleted('b')
console.log(advanced, tombstone)
const decision = gate.accept({ key: 'a', version: 2 })
if (!decision.accepted) {
  const dropped: 'stale' | 'duplicate' | 'evicted' = decision.reason
  console.log(dropped)
}
const stats: GateStats = gate.stats()
const known: number | undefined = gate.version('a')
gate.reset()

try {
  const envelope: Envelope<Todo> = parseEnvelope<Todo>('{}')
  console.log(envelope.data.done, envelope.tags?.kind, stats.size, known)
} catch (error) {
  if (error instanceof EnvelopeError) {
    const reason: EnvelopeErrorReason = error.reason
    if (reason === 'too_deep') console.log(`over ${MAX_DEPTH} levels`)
    console.log(error.field, error.message)
  }
}
const shard: number = shardFor('user:1', 16)
console.log(shard)

// @ts-expect-error: versions are numbers
gate.seed('a', '1')
// @ts-expect-error: unknown event
synced.on('nope', () => {})

// @ts-expect-error: a map subscription keeps its own state (sync + key changes), not envelopes
syncSubscription(centrifuge.newMapSubscription('map:todos'), { load: () => ({ items: [] }) })
// @ts-expect-error: nor does a shared-poll subscription
syncSubscription(centrifuge.newSharedPollSubscription('poll:todos'), { load: () => ({ items: [] }) })
// @ts-expect-error: state is read-only
synced.state = 'live'
