/**
 * The example app (examples/app: Starlette + SQLite + AsyncPublisher, with its
 * own Redis, Centrifugo and relay) end to end in headless Chromium. A burst of
 * updates races the page's initial load, and the form saves its own default
 * price. Then, while updates keep coming, the page's buttons SIGKILL the relay
 * (the status pill must say "delayed", not "live", while updates wait), start
 * it again and restart Centrifugo, each action logging "done"; the page's
 * WebSocket reconnects and its subscription cannot recover (history is in
 * memory). The DOM must end up showing exactly what SQLite holds. Then,
 * stale and duplicate messages injected straight into the queues (past the
 * database) must be dropped by the page's version gate, and a live update
 * after them must still show up. Last, a product is deleted while an older
 * update of it races the delete (and is injected again after it, and after a
 * reload): it must disappear and stay gone, until it is created again; and
 * the page's Delete button deletes another one.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'

import { openPage } from './support/browser.js'
import { publishWithPython, runPython, startExampleApp, withTimeout } from './support/services.js'
import { settle, waitFor } from './support/wait.js'

const BURST = 200
const BURST_CONCURRENCY = 8
const INJECTED_KEYS = 5

const READ_DATABASE = `
import json, sqlite3, sys
db = sqlite3.connect(json.load(sys.stdin)["db"])
rows = db.execute("SELECT key, version, data FROM objects WHERE deleted = 0 ORDER BY key").fetchall()
json.dump([{"key": k, "version": v, "data": json.loads(d)} for k, v, d in rows], sys.stdout)
`

const formatPrice = cents => `$${(cents / 100).toFixed(2)}`

describe('example app e2e: price board in headless Chromium', { timeout: 240000 }, () => {
  const workdir = mkdtempSync(join(tmpdir(), 'ca-app-e2e-'))
  const dbPath = join(workdir, 'app.sqlite3')
  let app
  let context
  let page
  let productKeys = []
  const pageProblems = []

  before(async () => {
    app = await startExampleApp({ dbPath })
    ;({ context, page } = await openPage(workdir, pageProblems))
    page.on('console', message => {
      // While Centrifugo restarts, Chromium logs each refused WebSocket attempt.
      const expected = /^WebSocket connection to '.*' failed/.test(message.text())
      if (message.type() === 'error' && !expected) pageProblems.push(`console: ${message.text()}`)
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

  const stackStatus = async () => (await fetch(`${app.url}/api/stack`, { signal: AbortSignal.timeout(10000) })).json()

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
    const started = log.indexOf(`${label}…`)
    assert.ok(started >= 0 && log.indexOf(`${label}: done`) > started, JSON.stringify(log))
  }

  /** The sync pill as a person sees it. */
  const syncPill = () =>
    page.$eval('#sync', pill => ({ state: pill.dataset.state, text: pill.textContent }))

  /** SQLite's rows, read straight from the file (not through the app). */
  const databaseRows = () => runPython(READ_DATABASE, { db: dbPath })

  /** What a person sees, per card: key, version, name, price, and the data behind it. */
  const shownOnPage = () =>
    page.$$eval('#board .card', cards =>
      cards.map(card => ({
        key: card.querySelector('.key').textContent,
        version: card.querySelector('.version').textContent,
        name: card.querySelector('.name').textContent,
        price: card.querySelector('.price').textContent,
        data: JSON.parse(card.dataset.json)
      }))
    )

  const expectedOnPage = rows =>
    rows.map(({ key, version, data }) => ({
      key,
      version: `v${version}`,
      name: data.name,
      price: formatPrice(data.price_cents),
      data
    }))

  const remove = async path => {
    const response = await fetch(`${app.url}${path}`, { method: 'DELETE', signal: AbortSignal.timeout(30000) })
    const reply = await response.json()
    assert.equal(response.status, 200, `DELETE ${path}: ${JSON.stringify(reply)}`)
    return reply
  }

  /** With writes stopped: wait (bounded) until the DOM shows exactly SQLite's rows, and assert it. */
  const assertPageShowsDatabase = async (what, count = 20) => {
    const rows = await databaseRows()
    assert.equal(rows.length, count, `the price board has ${count} objects`)
    const expected = expectedOnPage(rows)
    let shown
    await waitFor(() => JSON.stringify(shown) === JSON.stringify(expected), {
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

  /** Price updates from two concurrent clients until `stop()`; counts them, and rethrows a failed one. */
  const startWriter = () => {
    let stopped = false
    let count = 0
    const client = async () => {
      while (!stopped) {
        const key = productKeys[Math.floor(Math.random() * productKeys.length)]
        await post(`/api/objects/${key}`, { price_cents: 50 + 5 * Math.floor(Math.random() * 200) })
        count++
        await settle(20)
      }
    }
    let failure
    const clients = Promise.all([client(), client()]).catch(error => {
      failure = error
      stopped = true
    })
    const check = () => {
      if (failure) throw failure
      return count
    }
    return {
      count: check,
      stop: async () => {
        stopped = true
        await clients
        return check()
      }
    }
  }

  test('the page shows the database after a burst, a relay SIGKILL + restart and a Centrifugo restart', async t => {
    let finished = false
    t.after(async () => {
      if (finished) return
      const state = await page
        .evaluate(() => ({
          stats: window.exampleApp?.stats(),
          connection: window.exampleApp?.connection,
          sync: window.exampleApp?.sync,
          resyncs: window.exampleApp?.resyncs,
          drops: window.exampleApp?.drops,
          errors: window.exampleApp?.errors
        }))
        .catch(error => `unavailable: ${error.message}`)
      t.diagnostic(`page ${JSON.stringify(state)}\nproblems ${pageProblems.join('\n')}`)
      t.diagnostic(`app log tail:\n${app.logs().slice(-3000)}`)
      if (app.relayLog && existsSync(app.relayLog)) {
        t.diagnostic(`relay log tail:\n${readFileSync(app.relayLog, 'utf8').slice(-3000)}`)
      }
    })
    productKeys = (await databaseRows()).map(row => row.key)
    assert.equal(productKeys.length, 20)

    // 1. A burst of 200 updates across the 20 objects races the page's initial load.
    const navigation = page.goto(app.url)
    const burst = (async () => {
      let next = 0
      const client = async () => {
        for (let i = next++; i < BURST; i = next++) {
          const key = productKeys[i % productKeys.length]
          await post(`/api/objects/${key}`, { price_cents: 100 + 5 * i })
        }
      }
      await Promise.all(Array.from({ length: BURST_CONCURRENCY }, client))
    })()
    await Promise.all([navigation, burst])
    await page.waitForFunction(() => window.exampleApp?.ready === true)
    const afterBurst = await assertPageShowsDatabase('the page to show the database after the burst')
    assert.equal(
      afterBurst.reduce((sum, row) => sum + row.version, 0),
      20 + BURST,
      'every object was seeded at version 1 and bumped once per update'
    )

    // 1b. The form's default price (1.99) is valid for its own input, and Save stores it.
    const priceInput = await page.$eval('#update-form input[name=price]', input => ({
      value: input.value,
      valid: input.checkValidity()
    }))
    assert.deepEqual(priceInput, { value: '1.99', valid: true })
    const [saved] = afterBurst
    await page.selectOption('#product', saved.key)
    await page.click('#update-form button:not([type])')
    await page.waitForFunction(
      ({ key, version }) => window.exampleApp.log.includes(`saved ${key} at v${version}`),
      { key: saved.key, version: saved.version + 1 },
      { timeout: 30000 }
    )
    const afterSave = await assertPageShowsDatabase('the saved default price to show up')
    assert.equal(afterSave.find(row => row.key === saved.key).data.price_cents, 199)
    // Nothing waits in the queues now (the burst may have, on a busy machine): "live".
    await page.waitForFunction(() => document.querySelector('#sync').dataset.state === 'live', null, {
      timeout: 30000
    })
    assert.deepEqual(await syncPill(), { state: 'live', text: 'live' })

    // 2. Updates keep coming while the relay is killed and started again, from
    // the page's buttons. Meanwhile the pill must not claim "live".
    const writer = startWriter()
    try {
      await clickAction('relay/kill', 'kill relay')
      assert.equal((await stackStatus()).relay_pid, null, 'the relay is gone')
      const before = writer.count()
      await waitFor(() => writer.count() >= before + 20, { timeoutMs: 30000, what: 'updates while the relay is dead' })
      await page.waitForFunction(() => document.querySelector('#sync').dataset.state === 'delayed', null, {
        timeout: 30000
      })
      const delayed = await syncPill()
      assert.match(delayed.text, /^delayed \d+\.\d s · \d+ waiting$/, JSON.stringify(delayed))
      assert.equal(await page.evaluate(() => window.exampleApp.sync), 'live', 'in sync with what arrived')
      assert.ok(
        await page.evaluate(() => window.exampleApp.log.some(line => line.startsWith('delivery delayed: '))),
        'the delay is logged'
      )
      const backlog = await stackStatus()
      assert.ok(backlog.queues.queued > 0, `updates wait in Redis while no relay runs: ${JSON.stringify(backlog)}`)
      await clickAction('relay/start', 'start relay')
      assert.ok((await stackStatus()).relay_pid > 0, 'a new relay runs')

      // 3. Centrifugo restarts: the page's WebSocket reconnects and, as the
      // history was in memory, its subscription cannot recover and reloads.
      const seen = await page.evaluate(() => ({
        connects: window.exampleApp.connects,
        resyncs: window.exampleApp.resyncs.length
      }))
      await clickAction('centrifugo/restart', 'restart centrifugo')
      await page.waitForFunction(
        ({ connects, resyncs }) =>
          window.exampleApp.connects > connects &&
          window.exampleApp.resyncs.length > resyncs &&
          window.exampleApp.sync === 'live',
        seen,
        { timeout: 30000 }
      )
      const more = writer.count()
      await waitFor(() => writer.count() >= more + 20, { timeoutMs: 30000, what: 'updates after the reconnect' })
    } finally {
      await writer.stop()
    }

    // 4. Writes stopped: the page converges on SQLite's state.
    const settled = await assertPageShowsDatabase(
      'the page to show the database after the relay restart and the reconnect'
    )
    const final = await page.evaluate(() => ({
      resyncs: window.exampleApp.resyncs,
      errors: window.exampleApp.errors,
      connection: window.exampleApp.connection,
      stats: window.exampleApp.stats()
    }))
    assert.ok(final.resyncs.includes('recovery-failed'), `the page reloaded after the restart: ${JSON.stringify(final)}`)
    assert.equal(final.connection, 'connected')
    assert.deepEqual(final.errors, [])
    const statsText = await page.$eval('#stat-accepted', element => element.textContent)
    assert.equal(statsText, String(final.stats.accepted), 'the gate counters are on the page')

    // Everything that was queued was delivered, nothing dead-lettered.
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
    // With the backlog delivered, the pill says "live" again.
    await page.waitForFunction(() => document.querySelector('#sync').dataset.state === 'live', null, {
      timeout: 30000
    })
    assert.ok(await page.evaluate(() => window.exampleApp.log.includes('delivery on time again')))

    // 5. A duplicate (the current version) and a stale message (the one before)
    // of a few objects, enqueued with the Python publisher past the database,
    // each with a fresh idempotency key so that Centrifugo delivers them: the
    // gate drops every one and the page does not change.
    const shownBefore = await shownOnPage()
    const before = await page.evaluate(() => window.exampleApp.stats())
    const injected = settled.slice(0, INJECTED_KEYS).flatMap(({ key, version, data }) => [
      { key, version, data: { ...data, price_cents: 1, injected: 'duplicate' } },
      { key, version: version - 1, data: { ...data, price_cents: 1, injected: 'stale' } }
    ])
    await publishWithPython(
      app,
      injected.map(message => ({ ...message, channel: app.channel, idempotency_key: `inject-${randomUUID()}` }))
    )
    await page.waitForFunction(
      ({ duplicate, stale, count }) => {
        const stats = window.exampleApp.stats()
        return stats.duplicate - duplicate + (stats.stale - stale) >= count
      },
      { duplicate: before.duplicate, stale: before.stale, count: injected.length }
    )
    const afterInjection = await page.evaluate(() => window.exampleApp.stats())
    assert.equal(afterInjection.duplicate - before.duplicate, INJECTED_KEYS)
    assert.equal(afterInjection.stale - before.stale, INJECTED_KEYS)
    assert.equal(afterInjection.accepted, before.accepted, 'nothing injected was applied')
    assert.deepEqual(await shownOnPage(), shownBefore, 'the injected messages did not reach the DOM')

    // A live update after the injection is applied as usual.
    const [target] = settled
    const updated = await post(`/api/objects/${target.key}`, { price_cents: 4242 })
    assert.equal(updated.version, target.version + 1)
    await assertPageShowsDatabase('a live update after the injection to show up')

    // 6. A delete races an older update of the same product: the update is
    // enqueued (past the database, with a fresh idempotency key) while the app
    // deletes the row and publishes the delete. Whichever lands first, the
    // product disappears and the older update is dropped: as a duplicate if it
    // came first (the page held that version), as stale if it came after the
    // delete (the gate keeps the delete's version as a tombstone).
    const victim = (await databaseRows())[1]
    const older = () =>
      publishWithPython(app, [
        {
          channel: app.channel,
          key: victim.key,
          version: victim.version,
          data: { ...victim.data, price_cents: 1, injected: 'older than the delete' },
          idempotency_key: `older-${randomUUID()}`
        }
      ])
    const dropReasons = key =>
      page.evaluate(key => window.exampleApp.drops.filter(drop => drop.key === key).map(drop => drop.reason), key)
    const earlierDrops = (await dropReasons(victim.key)).length // from the injection above
    const dropsOf = async key => (await dropReasons(key)).length - earlierDrops
    const beforeDelete = await page.evaluate(() => window.exampleApp.stats())
    const [deleted] = await Promise.all([remove(`/api/objects/${victim.key}`), older()])
    assert.deepEqual(deleted, { key: victim.key, version: victim.version + 1, deleted: true, published: true })
    await page.waitForFunction(key => window.exampleApp.deletes.some(d => d.key === key), victim.key)
    let victimDrops = 0
    await waitFor(() => victimDrops >= 1, {
      timeoutMs: 30000,
      intervalMs: 100,
      what: 'the racing older update to be dropped',
      poll: async () => {
        victimDrops = await dropsOf(victim.key)
      }
    })
    const afterRace = await page.evaluate(() => window.exampleApp.stats())
    assert.equal(afterRace.accepted, beforeDelete.accepted + 1, 'only the delete was applied')
    assert.equal(await page.$(`#board .card[data-key="${victim.key}"]`), null, 'the card is gone')

    // The same older update once more, now certainly after the delete: stale.
    await older()
    await waitFor(() => victimDrops >= 2, {
      timeoutMs: 30000,
      intervalMs: 100,
      what: 'the late older update to be dropped',
      poll: async () => {
        victimDrops = await dropsOf(victim.key)
      }
    })
    // And after a full reload, whose snapshot lists the product's tombstone.
    const loads = await page.evaluate(() => window.exampleApp.loads)
    await page.evaluate(() => window.exampleApp.resync('manual'))
    await page.waitForFunction(loads => window.exampleApp.loads > loads && window.exampleApp.state() === 'live', loads)
    await older()
    await waitFor(() => victimDrops >= 3, {
      timeoutMs: 30000,
      intervalMs: 100,
      what: 'the older update after the reload to be dropped',
      poll: async () => {
        victimDrops = await dropsOf(victim.key)
      }
    })
    const victimDropReasons = (await dropReasons(victim.key)).slice(earlierDrops)
    assert.deepEqual(victimDropReasons.slice(1), ['stale', 'stale'], JSON.stringify(victimDropReasons))
    assert.ok(['stale', 'duplicate'].includes(victimDropReasons[0]), JSON.stringify(victimDropReasons))
    await assertPageShowsDatabase('the page to show the database without the deleted product', 19)

    // Created again, its versions go on from the tombstone's: it shows up.
    const recreated = await post(`/api/objects/${victim.key}`, { name: victim.data.name, price_cents: 4343 })
    assert.equal(recreated.version, victim.version + 2)
    await assertPageShowsDatabase('the product created again to show up')

    // 7. The page's Delete button deletes the selected product.
    const doomed = (await databaseRows())[2]
    await page.selectOption('#product', doomed.key)
    await page.click('#delete')
    await page.waitForFunction(key => window.exampleApp.deletes.some(d => d.key === key), doomed.key, {
      timeout: 30000
    })
    const deletedLine = `deleted ${doomed.key} at v${doomed.version + 1}`
    assert.ok(await page.evaluate(line => window.exampleApp.log.includes(line), deletedLine), deletedLine)
    await assertPageShowsDatabase('the page to show the database without the product deleted from the page', 19)

    const drops = await page.evaluate(() => window.exampleApp.drops)
    assert.ok(drops.every(drop => drop.reason === 'stale' || drop.reason === 'duplicate'), JSON.stringify(drops))
    assert.deepEqual(await page.evaluate(() => window.exampleApp.errors), [])
    assert.deepEqual(pageProblems, [])
    finished = true
  })
})
