/**
 * The example app in its outbox mode (`python -m examples.app --outbox`:
 * PostgreSQL rows, each change's message written to the outbox table in the
 * same transaction, the forwarder moving committed rows to Redis) end to end
 * in headless Chromium, with the backend killed right after a commit.
 *
 * The backend runs as a child of the launcher and accepts
 * `?crash=after-commit`: it SIGKILLs itself as the very next step after
 * PostgreSQL acknowledged the commit, before it answers (deterministic, not
 * timed). The launcher starts it again on the same port. The page's
 * "Save, then crash backend" button does it once with the forwarder running:
 * the page must still converge on PostgreSQL's rows. Then the forwarder is
 * killed and a change crashes the backend again: the change waits as an outbox
 * row (the page, which cannot have it yet, says "delayed"), and only once the
 * forwarder is started again does the page show it.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { isDeepStrictEqual } from 'node:util'

import { openPage } from './support/browser.js'
import { runPython, startExampleApp, withTimeout } from './support/services.js'
import { waitFor } from './support/wait.js'

const BURST = 100
const BURST_CONCURRENCY = 8
const CRASH = 'crash=after-commit'

const READ_DATABASE = `
import json, sys
import psycopg
with psycopg.connect(json.load(sys.stdin)["dsn"]) as conn:
    rows = conn.execute(
        "SELECT key, version, data FROM objects WHERE NOT deleted ORDER BY key"
    ).fetchall()
    (outbox,) = conn.execute("SELECT count(*) FROM centrifugo_outbox").fetchone()
json.dump({"rows": [{"key": k, "version": v, "data": d} for k, v, d in rows], "outbox": outbox}, sys.stdout)
`

const formatPrice = cents => `$${(cents / 100).toFixed(2)}`

describe('example app e2e, outbox mode: the backend killed right after a commit', { timeout: 240000 }, () => {
  const workdir = mkdtempSync(join(tmpdir(), 'ca-app-outbox-e2e-'))
  let app
  let context
  let page
  const pageProblems = []
  const droppedRequests = []

  before(async () => {
    app = await startExampleApp({ outbox: true })
    ;({ context, page } = await openPage(workdir, pageProblems))
    page.on('console', message => {
      // A request the dying backend had accepted gets no answer; Chromium logs it.
      const dropped = /^Failed to load resource: net::ERR_(EMPTY_RESPONSE|CONNECTION_RESET)/.test(message.text())
      if (dropped) droppedRequests.push(message.location().url)
      else if (message.type() === 'error') pageProblems.push(`console: ${message.text()}`)
    })
  })

  after(async () => {
    await withTimeout(context?.close() ?? Promise.resolve(), 20000, 'Chromium to close').catch(() => {})
    await app?.stop()
    rmSync(workdir, { recursive: true, force: true })
  })

  const post = async (path, body = {}) => {
    const response = await fetch(`${app.url}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(30000)
    })
    const reply = await response.json()
    assert.equal(response.status, 200, `${path}: ${JSON.stringify(reply)}`)
    return reply
  }

  const stackStatus = async () =>
    (await fetch(`${app.url}/api/stack`, { signal: AbortSignal.timeout(30000) })).json()

  /** Click one of the page's stack buttons and wait until the page logs that it is done. */
  const clickAction = async (action, label) => {
    const logged = await page.evaluate(() => window.exampleApp.log.length)
    await page.click(`[data-action="${action}"]`)
    await page.waitForFunction(
      ({ logged, label }) => {
        const log = window.exampleApp.log.slice(logged)
        return log.includes(`${label}: done`) || log.some(line => line.startsWith(`${label} failed`))
      },
      { logged, label },
      { timeout: 30000 }
    )
    const log = await page.evaluate(logged => window.exampleApp.log.slice(logged), logged)
    assert.ok(log.includes(`${label}: done`), JSON.stringify(log))
  }

  /** PostgreSQL's rows and outbox backlog, read straight from the database (not through the app). */
  const database = () => runPython(READ_DATABASE, { dsn: app.dsn })

  const shownOnPage = () =>
    page.$$eval('#board .card', cards =>
      cards.map(card => ({
        key: card.querySelector('.key').textContent,
        version: card.querySelector('.version').textContent,
        price: card.querySelector('.price').textContent,
        data: JSON.parse(card.dataset.json)
      }))
    )

  const expectedOnPage = rows =>
    rows.map(({ key, version, data }) => ({ key, version: `v${version}`, price: formatPrice(data.price_cents), data }))

  /** Wait (bounded) until the DOM shows exactly PostgreSQL's rows, and assert it. */
  const assertPageShowsDatabase = async what => {
    const { rows } = await database()
    assert.equal(rows.length, 20, 'the price board has 20 products')
    const expected = expectedOnPage(rows)
    let shown
    await waitFor(() => isDeepStrictEqual(shown, expected), {
      timeoutMs: 30000,
      intervalMs: 100,
      what,
      poll: async () => {
        shown = await shownOnPage()
      }
    }).catch(() => {})
    assert.deepEqual(shown, expected, `${what}\n${pageProblems.join('\n')}`)
    return rows
  }

  /** Wait (bounded) until the launcher reports a backend other than `pid` serving again. */
  const waitForNewBackend = async pid => {
    let status
    await waitFor(() => status?.backend_pid && status.backend_pid !== pid, {
      timeoutMs: 60000,
      intervalMs: 100,
      what: `a new backend after pid ${pid}`,
      poll: async () => {
        status = await stackStatus().catch(() => undefined)
      }
    })
    return status
  }

  test('a change committed by a backend that dies before answering still reaches the page', async t => {
    let finished = false
    t.after(() => {
      if (finished) return
      t.diagnostic(`problems ${pageProblems.join('\n')}\ndropped ${droppedRequests.join('\n')}`)
      t.diagnostic(`launcher log tail:\n${app.logs().slice(-3000)}`)
      for (const [name, path] of [
        ['backend', app.backendLog],
        ['forwarder', app.forwarderLog],
        ['relay', app.relayLog]
      ]) {
        if (path && existsSync(path)) t.diagnostic(`${name} log tail:\n${readFileSync(path, 'utf8').slice(-3000)}`)
      }
    })
    const seeded = (await database()).rows
    assert.equal(seeded.length, 20)
    const keys = seeded.map(row => row.key)

    // 1. A burst through the outbox races the page's initial load.
    const navigation = page.goto(app.url)
    const burst = (async () => {
      let next = 0
      const client = async () => {
        for (let i = next++; i < BURST; i = next++) {
          await post(`/api/objects/${keys[i % keys.length]}`, { price_cents: 100 + 5 * i })
        }
      }
      await Promise.all(Array.from({ length: BURST_CONCURRENCY }, client))
    })()
    await Promise.all([navigation, burst])
    await page.waitForFunction(() => window.exampleApp?.ready === true)
    const afterBurst = await assertPageShowsDatabase('the page to show PostgreSQL after the burst')
    assert.equal(afterBurst.reduce((sum, row) => sum + row.version, 0), 20 + BURST)
    assert.match(await page.$eval('#pipeline', p => p.textContent), /outbox\.publish/)
    const first = await stackStatus()
    assert.ok(first.forwarder_pid > 0 && first.backend_pid > 0, JSON.stringify(first))
    assert.equal(first.backend_restarts, 0)

    // 2. "Save, then crash backend": the backend commits, then dies before answering.
    const [victim] = afterBurst
    await page.selectOption('#product', victim.key)
    await page.fill('#update-form input[name=price]', '7.77')
    await page.click('#crash-save')
    await page.waitForFunction(key => window.exampleApp.crashes.some(crash => crash.key === key), victim.key, {
      timeout: 30000
    })
    const committed = (await database()).rows.find(row => row.key === victim.key)
    assert.deepEqual(
      { version: committed.version, price: committed.data.price_cents },
      { version: victim.version + 1, price: 777 },
      'the change was committed before the backend died'
    )
    await assertPageShowsDatabase('the change the dead backend committed to reach the page')
    const back = await waitForNewBackend(first.backend_pid)
    assert.equal(back.backend_restarts, 1, JSON.stringify(back))
    assert.equal(back.forwarder_pid, first.forwarder_pid, 'the forwarder kept running')

    // 3. The forwarder is down when the backend dies after its commit: the change
    // waits in the outbox table, the page says so, and it arrives only once a
    // forwarder runs again.
    await clickAction('forwarder/kill', 'kill forwarder')
    assert.equal((await stackStatus()).forwarder_pid, null, 'the forwarder is gone')
    const [, second] = (await database()).rows
    const crashed = await fetch(`${app.url}/api/objects/${second.key}?${CRASH}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ price_cents: 4242 }),
      signal: AbortSignal.timeout(30000)
    }).then(
      response => `answered ${response.status}`,
      error => `no answer (${error.cause?.code ?? error.message})`
    )
    assert.match(crashed, /^no answer/, 'the backend died instead of answering')
    const waiting = await waitForNewBackend(back.backend_pid)
    assert.equal(waiting.backend_restarts, 2, JSON.stringify(waiting))
    const stored = await database()
    const row = stored.rows.find(r => r.key === second.key)
    assert.deepEqual({ version: row.version, price: row.data.price_cents }, { version: second.version + 1, price: 4242 })
    assert.equal(stored.outbox, 1, 'the committed change waits in the outbox')
    const card = await page.$eval(`#board .card[data-key="${second.key}"]`, c => c.querySelector('.version').textContent)
    assert.equal(card, `v${second.version}`, 'nothing but the outbox row can bring the change')
    await page.waitForFunction(() => document.querySelector('#sync').dataset.state === 'delayed', null, {
      timeout: 30000
    })
    assert.match(await page.$eval('#sync', pill => pill.textContent), /^delayed \d+\.\d s · 1 waiting$/)
    assert.match(await page.$eval('#stack', output => output.textContent), /forwarder stopped · outbox 1/)

    await clickAction('forwarder/start', 'start forwarder')
    await assertPageShowsDatabase('the waiting change to reach the page once the forwarder runs')
    assert.equal((await database()).outbox, 0, 'the forwarder emptied the outbox')
    await page.waitForFunction(() => document.querySelector('#sync').dataset.state === 'live', null, {
      timeout: 30000
    })
    let status
    await waitFor(() => status?.queues?.queued === 0 && status.queues.in_flight === 0, {
      timeoutMs: 30000,
      intervalMs: 200,
      what: 'the queues to drain',
      poll: async () => {
        status = await stackStatus()
      }
    })
    assert.equal(status.queues.dead_letters, 0)
    assert.ok(status.forwarder_pid > 0)

    // The page never reloaded for any of it: it stayed subscribed throughout.
    const final = await page.evaluate(() => ({
      errors: window.exampleApp.errors,
      resyncs: window.exampleApp.resyncs,
      connection: window.exampleApp.connection
    }))
    assert.deepEqual(final, { errors: [], resyncs: [], connection: 'connected' })
    assert.ok(
      droppedRequests.every(url => !url.includes('/api/objects/') || url.includes(CRASH)),
      `only the crashing save went unanswered among the saves: ${droppedRequests.join(', ')}`
    )
    assert.deepEqual(pageProblems, [])
    finished = true
  })
})
