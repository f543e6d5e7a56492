// The React hook of docs/client.md, type-checked by `npm run typecheck` (never run).
import type { Subscription } from 'centrifuge'
import { useEffect, useState } from 'react'
import { syncSubscription, type SyncState } from 'centrifugo-async-client'

export interface Row<Data> {
  key: string
  version: number
  data: Data
}

/** The objects of one channel, in sync; `url` answers `[{key, version, data}]` (and `/key` one of them). */
export function useSyncedObjects<Data>(subscription: Subscription, url: string) {
  const [objects, setObjects] = useState(() => new Map<string, Row<Data>>())
  const [state, setState] = useState<SyncState>('loading')

  useEffect(() => {
    const change = (edit: (next: Map<string, Row<Data>>) => void) =>
      setObjects(previous => {
        const next = new Map(previous)
        edit(next)
        return next
      })
    const synced = syncSubscription<Data>(subscription, {
      async load({ signal }) {
        const rows: Row<Data>[] = await (await fetch(url, { signal, cache: 'no-store' })).json()
        setObjects(new Map(rows.map(row => [row.key, row])))
        return { items: rows }
      }
    })
    synced.on('update', ({ key, version, data }) => change(next => next.set(key, { key, version, data })))
    synced.on('delete', ({ key }) => change(next => next.delete(key)))
    synced.on('drop', ({ key }, { reason }) => {
      if (reason !== 'evicted') return
      void synced.reloadKey(key, async ({ signal }) => {
        const response = await fetch(`${url}/${encodeURIComponent(key)}`, { signal, cache: 'no-store' })
        if (response.status === 404) return { deleted: true, apply: () => change(next => next.delete(key)) }
        const row: Row<Data> = await response.json()
        return { version: row.version, apply: () => change(next => next.set(key, row)) }
      })
    })
    for (const event of ['resync', 'ready', 'error'] as const) synced.on(event, () => setState(synced.state))
    return () => synced.dispose()
  }, [subscription, url])

  return { objects, state }
}
