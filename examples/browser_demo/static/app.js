// The page: load the objects from the backend, keep them current from
// Centrifugo, and let syncSubscription + the version gate decide which
// publications to apply. `window.demo` exposes the state for the e2e test.
import { Centrifuge } from 'centrifuge'
import { syncSubscription } from 'centrifugo-async-client'

const objects = new Map()
const statusElement = document.getElementById('status')
const demo = { ready: false, drops: [], errors: [], stats: () => ({}), objects }
window.demo = demo

function render() {
  const rows = [...objects.values()]
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map(({ key, version, data }) => {
      const row = document.createElement('tr')
      row.dataset.key = key
      for (const [name, text] of [['key', key], ['version', String(version)], ['data', JSON.stringify(data)]]) {
        const cell = document.createElement('td')
        cell.className = name
        cell.textContent = text
        row.append(cell)
      }
      return row
    })
  document.getElementById('objects').replaceChildren(...rows)
  document.getElementById('stats').textContent = JSON.stringify(demo.stats())
}

const setStatus = text => {
  statusElement.textContent = text
}

async function fetchJson(url, init) {
  const response = await fetch(url, init)
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`)
  return response.json()
}

const config = await fetchJson('/config')
const centrifuge = new Centrifuge(config.ws_url)
const subscription = centrifuge.newSubscription(config.channel, { recoverable: true, positioned: true })

const synced = syncSubscription(subscription, {
  // Read the state with its versions and show it; publications that arrive
  // meanwhile are buffered and replayed through the gate afterwards.
  async load({ reason }) {
    setStatus(`loading (${reason})`)
    const { items } = await fetchJson('/state')
    objects.clear()
    for (const item of items) objects.set(item.key, item)
    render()
    return { items }
  }
})
demo.stats = () => synced.gate.stats()

synced.on('update', ({ key, version, data }) => {
  objects.set(key, { key, version, data })
  render()
})
synced.on('drop', (envelope, { reason }) => {
  demo.drops.push({ key: envelope.key, version: envelope.version, reason })
  render()
  // The gate forgot this key (memory bound): reload everything to be safe.
  if (reason === 'evicted') synced.resync('evicted')
})
synced.on('resync', ({ reason }) => setStatus(`resyncing (${reason})`))
synced.on('ready', () => {
  demo.ready = true
  setStatus('live')
})
synced.on('error', (error, context) => {
  demo.errors.push(`${context.phase}: ${error && error.message}`)
  console.warn('centrifugo-async-client', context, error)
})

document.getElementById('update-form').addEventListener('submit', async event => {
  event.preventDefault()
  const form = new FormData(event.target)
  await fetchJson('/update', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ key: form.get('key'), data: { text: form.get('text') } })
  })
})

centrifuge.connect()
