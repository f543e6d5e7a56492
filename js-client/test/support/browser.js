/**
 * Headless Chromium for the end-to-end tests: Debian's /usr/bin/chromium driven
 * by playwright-core (its own browser download cannot run here), with a fresh
 * profile and no background networking.
 */
import { join } from 'node:path'

import { chromium } from 'playwright-core'

import { withTimeout } from './services.js'

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
]

/**
 * Start Chromium with a profile in `workdir` and open its first page; every
 * page error and failed response is pushed to `problems`.
 */
export async function openPage (workdir, problems) {
  const context = await withTimeout(
    chromium.launchPersistentContext(join(workdir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 60000
    }),
    70000,
    'Chromium to start'
  )
  const page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(30000)
  page.on('pageerror', error => problems.push(`pageerror: ${error.message}`))
  page.on('response', response => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`)
  })
  return { context, page }
}
