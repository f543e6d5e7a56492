// The price board: load the rows (with their versions, and the tombstones of
// deleted ones) from the backend, then keep them current from Centrifugo.
// syncSubscription orders the two (subscribe, buffer, load, replay) and its
// version gate drops whatever is not newer than what the page shows, deletes
// included: a late update of a deleted product never brings it back.
// The sync pill says "live" only while nothing waits in the queues for more
// than a second (GET /api/delivery, polled): with the relay down and updates
// queued, the page is in sync with what it received, but not with the database.
// In the outbox mode (PostgreSQL + outbox, `--outbox`) the outbox rows waiting
// for the forwarder count too, and "Save, then crash backend" kills the backend
// right after its commit: the change still arrives, through the forwarder.
// `window.exampleApp` exposes the state for the e2e test.
import { Centrifuge } from 'centrifuge'
import { syncSubscription } from 'centrifugo-async-client'

const DELAYED_AFTER_MS = 1000

const objects = new Map() // key -> {key, version, data}
const cards = new Map() // key -> the card element
const $ = id => document.getElementById(id)

const app = {
  ready: false,
  connection: 'disconnected',
  sync: 'starting',
  syncText: 'starting',
  /** From GET /api/delivery: 'pending' (no answer yet), 'on-time', 'delayed' or 'unknown'. */
  delivery: { state: 'pending', queued: 0, inFlight: 0, outbox: 0, oldestMs: null },
  log: [],
  crashes: [],
  connects: 0,
  loads: 0,
  resyncs: [],
  drops: [],
  deletes: [],
  reloads: [],
  errors: [],
  objects,
  stats: () => ({ size: 0, accepted: 0, stale: 0, duplicate: 0, evicted: 0 }),
  /** What the page shows, sorted by key: [{key, version, data}]. */
  snapshot: () => [...objects.values()].sort(byKey)
}
window.exampleApp = app

function byKey(a, b) {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0
}

const formatPrice = cents => (Number.isInteger(cents) ? `$${(cents / 100).toFixed(2)}` : '—')

function logEvent(text, kind = 'info') {
  app.log.push(text)
  const item = document.createElement('li')
  item.className = kind
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`
  const list = $('events')
  list.prepend(item)
  while (list.children.length > 12) list.lastChild.remove()
}

function setPill(id, state, text = state) {
  const pill = $(id)
  pill.dataset.state = state
  pill.textContent = text
}

function setSync(state, text = state) {
  app.sync = state
  app.syncText = text
  renderSyncPill()
}

const seconds = ms => `${(ms / 1000).toFixed(1)} s`

/** The subscription's state, unless it is live while delivery lags: then "delayed". */
function renderSyncPill() {
  const { state, oldestMs } = app.delivery
  if (app.sync !== 'live') setPill('sync', app.sync, app.syncText)
  else if (state === 'delayed') setPill('sync', 'delayed', `delayed ${seconds(oldestMs)} · ${waiting()} waiting`)
  else if (state === 'unknown') setPill('sync', 'unknown', 'live? (delivery unknown)')
  else setPill('sync', 'live')
}

/** Updates between the backend and the pages: in the queues, and in the outbox table. */
const waiting = () => app.delivery.queued + app.delivery.inFlight + app.delivery.outbox

/** Ask the backend how far behind delivery is, and say so when it changes. */
async function refreshDelivery() {
  const previous = app.delivery.state
  try {
    const { queued, in_flight, outbox = 0, oldest_age_ms } = await fetchJson('/api/delivery', { cache: 'no-store' })
    const state = oldest_age_ms !== null && oldest_age_ms > DELAYED_AFTER_MS ? 'delayed' : 'on-time'
    app.delivery = { state, queued, inFlight: in_flight, outbox, oldestMs: oldest_age_ms }
  } catch {
    app.delivery = { ...app.delivery, state: 'unknown' }
  }
  const { state, oldestMs } = app.delivery
  if (state === 'delayed' && previous !== 'delayed') {
    logEvent(`delivery delayed: ${waiting()} updates waiting, the oldest for ${seconds(oldestMs)}`, 'warn')
  } else if (previous === 'delayed' && state === 'on-time') {
    logEvent('delivery on time again')
  }
  renderSyncPill()
}

function renderStats() {
  const stats = app.stats()
  for (const name of ['accepted', 'stale', 'duplicate', 'evicted']) $(`stat-${name}`).textContent = stats[name]
  $('stat-deletes').textContent = app.deletes.length
  $('stat-loads').textContent = app.loads
}

/** Create or refresh the card of one object; `flash` highlights a live update. */
function renderCard({ key, version, data }, flash) {
  let card = cards.get(key)
  if (!card) {
    card = document.createElement('article')
    card.className = 'card'
    card.innerHTML =
      '<header><span class="name"></span><span class="version"></span></header>' +
      '<div class="price"></div><footer class="key"></footer>'
    cards.set(key, card)
  }
  card.dataset.key = key
  card.dataset.version = String(version)
  card.dataset.json = JSON.stringify(data)
  card.querySelector('.name').textContent = data?.name ?? key
  card.querySelector('.version').textContent = `v${version}`
  card.querySelector('.price').textContent = formatPrice(data?.price_cents)
  card.querySelector('.key').textContent = key
  if (flash) {
    card.classList.remove('flash')
    void card.offsetWidth // restart the animation
    card.classList.add('flash')
  }
  return card
}

function renderAll() {
  for (const key of [...cards.keys()]) if (!objects.has(key)) cards.delete(key)
  $('board').replaceChildren(...app.snapshot().map(object => renderCard(object, false)))
  const select = $('product')
  const selected = select.value
  select.replaceChildren(
    ...app.snapshot().map(({ key, data }) => new Option(data?.name ?? key, key, false, key === selected))
  )
  renderStats()
}

async function fetchJson(url, init) {
  const response = await fetch(url, init)
  const body = await response.json().catch(() => ({}))
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${body.error ?? body.detail ?? ''}`)
  return body
}

const post = (url, body = {}) =>
  fetchJson(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })

const config = await fetchJson('/api/config')
if (config.mode === 'outbox') {
  $('pipeline').innerHTML =
    'PostgreSQL rows with versions + <code>outbox.publish</code> in the same transaction → forwarder → Redis → relay → Centrifugo → this page'
}
// Short reconnect delays so the demo reacts quickly when Centrifugo comes back.
const centrifuge = new Centrifuge(config.ws_url, { minReconnectDelay: 200, maxReconnectDelay: 3000 })
const subscription = centrifuge.newSubscription(config.channel, { recoverable: true, positioned: true })

centrifuge.on('connecting', ({ reason }) => {
  if (app.connection === 'connected') logEvent(`connection lost (${reason}), reconnecting`, 'warn')
  app.connection = 'connecting'
  setPill('connection', 'connecting', 'connecting…')
})
centrifuge.on('connected', () => {
  app.connection = 'connected'
  app.connects++
  setPill('connection', 'connected')
  logEvent(app.connects === 1 ? 'connected' : 'reconnected')
})
centrifuge.on('disconnected', ({ reason }) => {
  app.connection = 'disconnected'
  setPill('connection', 'disconnected')
  logEvent(`disconnected (${reason})`, 'warn')
})
subscription.on('subscribed', ({ wasRecovering, recovered }) => {
  if (wasRecovering) logEvent(recovered ? 'resubscribed: missed updates recovered' : 'resubscribed: could not recover')
})

const synced = syncSubscription(subscription, {
  // Read every row with its version and show it. Publications arriving
  // meanwhile are buffered and replayed through the gate afterwards. The
  // tombstones tell the gate when a missing product was deleted. A newer load
  // aborts this one (signal): it must not write into the board then.
  async load({ reason, signal }) {
    setSync('loading', `loading (${reason})`)
    const { items, deleted } = await fetchJson('/api/state', { signal, cache: 'no-store' })
    if (signal.aborted) throw signal.reason
    objects.clear()
    for (const item of items) objects.set(item.key, item)
    app.loads++
    renderAll()
    return { items: [...items, ...deleted.map(tombstone => ({ ...tombstone, deleted: true }))] }
  }
})
app.stats = () => synced.gate.stats()
app.state = () => synced.state
app.resync = reason => synced.resync(reason)

/** Reload one product (the gate forgot it): applied only if newer than what the page shows. */
const reloadOne = key =>
  synced.reloadKey(key, async ({ signal }) => {
    const response = await fetch(`/api/objects/${encodeURIComponent(key)}`, { signal, cache: 'no-store' })
    if (response.status === 404) return { deleted: true, apply: () => removeObject(key) }
    const object = await response.json()
    if (!response.ok) throw new Error(`/api/objects/${key}: HTTP ${response.status}`)
    if (object.deleted) return { version: object.version, deleted: true, apply: () => removeObject(key) }
    return { version: object.version, apply: () => putObject(object) }
  })

function putObject(object) {
  const isNew = !objects.has(object.key)
  objects.set(object.key, object)
  if (isNew) renderAll()
  else renderCard(object, true)
  renderStats()
}

function removeObject(key) {
  if (objects.delete(key)) renderAll()
}

synced.on('update', ({ key, version, data }) => putObject({ key, version, data }))
synced.on('delete', ({ key, version }) => {
  app.deletes.push({ key, version })
  removeObject(key)
  renderStats()
  logEvent(`${key} deleted (v${version})`)
})
synced.on('drop', (envelope, { reason }) => {
  app.drops.push({ key: envelope.key, version: envelope.version, reason })
  renderStats()
  // The gate forgot this key (its memory is bounded): reload it.
  if (reason === 'evicted') reloadOne(envelope.key).then(applied => app.reloads.push({ key: envelope.key, applied }))
})
synced.on('resync', ({ reason }) => {
  app.resyncs.push(reason)
  setSync('resyncing', `reloading (${reason})`)
  logEvent(`reloading the board: ${reason}`, 'warn')
})
synced.on('ready', ({ reason }) => {
  app.ready = true
  setSync('live')
  logEvent(reason === 'initial' ? `loaded ${objects.size} objects, live` : `reloaded (${reason}), live`)
})
synced.on('error', (error, context) => {
  app.errors.push(`${context.phase}: ${error?.message ?? error}`)
  logEvent(`${context.phase} error: ${error?.message ?? error}`, 'error')
})

// Actions.

const run = async (what, action) => {
  try {
    await action()
  } catch (error) {
    logEvent(`${what} failed: ${error.message}`, 'error')
  }
}

$('update-form').addEventListener('submit', event => {
  event.preventDefault()
  const form = new FormData(event.target)
  const cents = Math.round(Number(form.get('price')) * 100)
  run('save', async () => {
    const { key, version } = await post(`/api/objects/${encodeURIComponent(form.get('key'))}`, { price_cents: cents })
    logEvent(`saved ${key} at v${version}`)
  })
})
$('delete').addEventListener('click', () => {
  const key = $('product').value
  if (!key) return
  run('delete', async () => {
    const response = await fetch(`/api/objects/${encodeURIComponent(key)}`, { method: 'DELETE' })
    const body = await response.json().catch(() => ({}))
    if (!response.ok) throw new Error(`HTTP ${response.status} ${body.error ?? ''}`)
    logEvent(`deleted ${key} at v${body.version}`)
  })
})
$('crash-save').hidden = !config.crash_hooks
$('crash-save').addEventListener('click', () => {
  const form = $('update-form')
  if (!form.reportValidity()) return
  const fields = new FormData(form)
  const key = fields.get('key')
  const cents = Math.round(Number(fields.get('price')) * 100)
  run('save & crash', async () => {
    logEvent(`saving ${key} at ${formatPrice(cents)}; the backend dies right after its commit…`)
    try {
      await post(`/api/objects/${encodeURIComponent(key)}?crash=after-commit`, { price_cents: cents })
    } catch (error) {
      if (!(error instanceof TypeError)) throw error // an HTTP error: it did not crash
      app.crashes.push({ key, price_cents: cents })
      logEvent('no answer: the backend died after its commit; the outbox row committed with it', 'warn')
      return
    }
    throw new Error('the backend answered instead of crashing')
  })
})
$('burst').addEventListener('click', () =>
  run('burst', async () => {
    const { updated, not_published } = await post('/api/burst?n=200')
    logEvent(`burst: ${updated} updates committed${not_published ? `, ${not_published} not published` : ''}`)
  })
)
$('reconnect').addEventListener('click', () => {
  centrifuge.disconnect()
  centrifuge.connect()
})

async function refreshStack() {
  const { relay_pid, queues, forwarder_pid, outbox, backend_pid, backend_restarts } = await fetchJson('/api/stack')
  const parts = [relay_pid ? `relay running (pid ${relay_pid})` : 'relay stopped']
  if (config.mode === 'outbox') {
    parts.push(forwarder_pid ? `forwarder running (pid ${forwarder_pid})` : 'forwarder stopped')
    parts.push(outbox ? `outbox ${outbox.rows}` : 'outbox ?')
  }
  if (queues) parts.push(`queued ${queues.queued}`, `in flight ${queues.in_flight}`, `delivered ${queues.delivered}`)
  if (backend_pid) parts.push(`backend pid ${backend_pid}, restarted ${backend_restarts}×`)
  $('stack').textContent = parts.join(' · ')
}

if (config.controls) {
  $('controls').hidden = false
  $('outbox-controls').hidden = config.mode !== 'outbox'
  for (const button of document.querySelectorAll('[data-action]')) {
    const label = button.textContent.toLowerCase()
    button.addEventListener('click', () =>
      run(label, async () => {
        button.disabled = true
        logEvent(`${label}…`)
        try {
          await post(`/api/stack/${button.dataset.action}`)
          logEvent(`${label}: done`)
          await refreshStack()
        } finally {
          button.disabled = false
        }
      })
    )
  }
  const poll = () => refreshStack().catch(() => {}).finally(() => setTimeout(poll, 1000))
  poll()
}

const pollDelivery = () => refreshDelivery().finally(() => setTimeout(pollDelivery, 1000))
pollDelivery()

centrifuge.connect()
