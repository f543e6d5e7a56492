/** Resolves after all currently queued microtasks and timers of `ms` have run. */
export const settle = (ms = 0) => new Promise(resolve => setTimeout(resolve, ms))

/**
 * Wait until `condition()` holds, running the optional async `poll()` before
 * each check; fails after `timeoutMs`.
 */
export async function waitFor(condition, { timeoutMs = 5000, intervalMs = 5, what = 'condition', poll } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (poll) await poll()
    if (condition()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await settle(intervalMs)
  }
}
