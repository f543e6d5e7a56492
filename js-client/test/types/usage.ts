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
  type GateStats,
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
  async load({ reason }) {
    const response = await fetch(`/todos?reason=${reason}`)
    const rows = (await response.json()) as { key: string; version: number; todo: Todo }[]
    for (const row of rows) store.set(row.key, row)
    return { items: rows }
  }
})

const unbind: () => void = synced.on('update', (envelope, { reason }) => {
  const title: string = envelope.data.title
  const why: 'new' | 'newer' = reason
  store.set(envelope.key, { version: envelope.version, todo: envelope.data })
  console.log(title, why)
})
synced.on('drop', (envelope, { reason }) => {
  if (reason === 'evicted') synced.gate.seed(envelope.key, envelope.version)
})
synced.on('error', (error, context) => {
  if (context.phase === 'parse') console.warn(context.publication.data, error)
  if (context.phase === 'load') console.warn(context.retryIn)
})
synced.on('resync', ({ reason }) => console.log(reason))
synced.on('ready', ({ reason }) => console.log(reason))
unbind()
synced.resync()
synced.dispose()

const gate = createVersionGate({ maxKeys: 10, evictedFilterBits: 1024 })
gate.seed('a', 1)
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
