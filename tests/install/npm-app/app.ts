// A scratch app using the packed centrifugo-async-client the way an app would.
// scripts/check-install compiles it with `tsc --strict` (the tarball's types fit a
// real centrifuge-js Subscription) and runs the output with node (the tarball's
// ES module resolves and works once installed from the registry's point of view).
import { Centrifuge } from 'centrifuge'
import {
  createVersionGate,
  parseEnvelope,
  shardFor,
  syncSubscription,
  type Envelope,
  type SyncedSubscription
} from 'centrifugo-async-client'

interface Price {
  cents: number
}

export function follow(url: string, render: (key: string, cents: number) => void): SyncedSubscription<Price> {
  const centrifuge = new Centrifuge(url)
  const subscription = centrifuge.newSubscription('obj:prices', { recoverable: true, positioned: true })
  const synced = syncSubscription<Price>(subscription, {
    async load() {
      const rows = (await (await fetch('/api/prices')).json()) as { key: string; version: number; cents: number }[]
      for (const row of rows) render(row.key, row.cents)
      return { items: rows }
    }
  })
  synced.on('update', (envelope) => render(envelope.key, envelope.data.cents))
  centrifuge.connect()
  return synced
}

const envelope: Envelope<Price> = parseEnvelope<Price>(
  '{"v":1,"channel":"obj:prices","key":"apples","version":4,"seq":1,"shard":0,"ts":1700000000000,"data":{"cents":249}}'
)
const gate = createVersionGate({ maxKeys: 100 })
gate.seed('apples', 3)
const first = gate.accept(envelope)
const again = gate.accept(envelope)
const shard = shardFor('apples', 4)
if (!first.accepted || again.accepted || again.reason !== 'duplicate' || !(shard >= 0 && shard < 4)) {
  throw new Error(`unexpected: ${JSON.stringify({ first, again, shard })}`)
}
console.log(`ok  the packed client runs: apples v${envelope.version} ${first.reason}, then ${again.reason}`)
