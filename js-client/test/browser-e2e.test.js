/**
 * End to end in headless Chromium: the demo backend (SQLite + Publisher),
 * the relay and Centrifugo from the devstack, and the demo page using
 * centrifuge-js + this package. A burst of updates races the page's initial
 * load; stale and duplicate messages injected straight into the queue must be
 * dropped; the DOM must end up showing exactly the database's state.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { openPage } from './support/browser.js'
import { publishWithPython, startDemoBackend, startDevstack, withTimeout } from './support/services.js'
import { waitFor } from './support/wait.js'

const KEYS = ['obj-1', 'obj-2', 'obj-3', 'obj-4', 'obj-5']
const UPDATES_PER_KEY = 6

describe('browser e2e: demo page in headless Chromium', { timeout: 240000 }, () => {
  const channel = `obj:demo-${randomUUID()}`
  const workdir = mkdtempSync(join(tmpdir(), 'ca-browser-e2e-'))
  let devstack
  let backend
  let context
  let page
  const pageProblems = []

  before(async () => {
    devstack = await startDevstack({ shards: 4 })
    backend = await startDemoBackend(devstack, { dbPath: join(workdir, 'demo.sqlite3'), channel })
    ;({ context, page } = await openPage(workdir, pageProblems))
    page.on('console', message => {
      if (message.type() === 'error') pageProblems.push(`console: ${message.text()}`)
    })
  })

  after(async () => {
    await withTimeout(context?.close() ?? Promise.resolve(), 20000, 'Chromium to close').catch(() => {})
    await backend?.stop()
    await devstack?.stop()
    rmSync(workdir, { recursive: true, force: true })
  })

  const postUpdate = async (key, data) => {
    const response = await fetch(`${backend.url}/update`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ key, data }),
      signal: AbortSignal.timeout(10000)
    })
    assert.equal(response.status, 200, await response.clone().text())
    return response.json()
  }

  const databaseState = async () => {
    const response = await fetch(`${backend.url}/state`, { signal: AbortSignal.timeout(10000) })
    const { items } = await response.json()
    return items.map(({ key, version, data }) => ({ key, version: String(version), data: JSON.stringify(data) }))
  }

  const pageState = () =>
    page.$$eval('#objects tr', rows =>
      rows.map(row => ({
        key: row.querySelector('.key').textContent,
        version: row.querySelector('.version').textContent,
        data: row.querySelector('.data').textContent
      }))
    )

  /** Wait until the DOM shows exactly what the database holds. */
  const waitForPageToMatchDatabase = async what => {
    let expected
    let shown
    await waitFor(() => JSON.stringify(shown) === JSON.stringify(expected), {
      timeoutMs: 30000,
      intervalMs: 100,
      what,
      poll: async () => {
        expected = await databaseState()
        shown = await pageState()
      }
    }).catch(error => {
      error.message += `\nexpected ${JSON.stringify(expected)}\nshown    ${JSON.stringify(shown)}\n${pageProblems.join('\n')}`
      throw error
    })
    return expected
  }

  test('the page converges on the database and drops injected stale and duplicate messages', async t => {
    let finished = false
    t.after(async () => {
      if (finished) return
      const demoState = await page
        .evaluate(() => ({ stats: window.demo?.stats(), drops: window.demo?.drops, errors: window.demo?.errors }))
        .catch(error => `unavailable: ${error.message}`)
      t.diagnostic(`page ${JSON.stringify(demoState)}\nproblems ${pageProblems.join('\n')}`)
      t.diagnostic(`backend log tail:\n${backend.logs().slice(-3000)}`)
      t.diagnostic(`relay log tail:\n${readFileSync(devstack.relay_log, 'utf8').slice(-3000)}`)
    })
    await Promise.all(KEYS.map(key => postUpdate(key, { text: `${key} initial` })))

    // The burst races the page's initial load (subscribe, GET /state, replay).
    const navigation = page.goto(backend.url)
    const burst = (async () => {
      for (let round = 1; round <= UPDATES_PER_KEY; round++) {
        await Promise.all(KEYS.map(key => postUpdate(key, { text: `${key} round ${round}` })))
      }
    })()
    await Promise.all([navigation, burst])
    await page.waitForFunction(() => window.demo?.ready === true)

    const settled = await waitForPageToMatchDatabase('the burst to show up')
    assert.deepEqual(
      settled.map(row => row.version),
      KEYS.map(() => String(UPDATES_PER_KEY + 1))
    )
    const before = await page.evaluate(() => window.demo.stats())

    const injected = settled.flatMap(({ key, version }) => [
      { key, version: Number(version), data: { text: 'INJECTED duplicate' } },
      { key, version: Number(version) - 1, data: { text: 'INJECTED stale' } }
    ])
    await publishWithPython(
      devstack,
      injected.map(message => ({ ...message, channel, idempotency_key: `inject-${randomUUID()}` }))
    )
    await page.waitForFunction(
      ({ duplicate, stale, count }) => {
        const stats = window.demo.stats()
        return stats.duplicate - duplicate + (stats.stale - stale) >= count
      },
      { duplicate: before.duplicate, stale: before.stale, count: injected.length }
    )
    const after = await page.evaluate(() => window.demo.stats())
    assert.equal(after.duplicate - before.duplicate, KEYS.length)
    assert.equal(after.stale - before.stale, KEYS.length)
    assert.equal(after.accepted, before.accepted, 'nothing injected was applied')
    assert.deepEqual(await pageState(), settled, 'the injected messages did not reach the DOM')

    const { version } = await postUpdate('obj-3', { text: 'after the injection' })
    assert.equal(version, UPDATES_PER_KEY + 2)
    await waitForPageToMatchDatabase('a live update after the injection')

    const drops = await page.evaluate(() => window.demo.drops)
    assert.ok(drops.every(drop => drop.reason === 'stale' || drop.reason === 'duplicate'), JSON.stringify(drops))
    assert.deepEqual(await page.evaluate(() => window.demo.errors), [])
    assert.deepEqual(pageProblems, [])
    finished = true
  })
})
