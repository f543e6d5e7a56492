import { parseEnvelope } from './envelope.js'
import { createVersionGate } from './gate.js'

/**
 * Keep a local copy of objects in sync with a centrifuge-js Subscription that
 * carries envelopes, solving the initial-load race: publications are buffered
 * from the moment the subscription is live until `load()` has fetched the
 * state (with versions) from the backend, then replayed through the version
 * gate, so nothing between "subscribed" and "loaded" is lost or applied twice.
 *
 * A later `subscribed` event that did not recover the missed publications
 * (`wasRecovering && !recovered`, or any resubscribe of a non-recoverable
 * subscription) starts a resync: buffer again, reload, hand the snapshot to the
 * gate (keys missing from it become tombstones), replay.
 *
 * `reloadKey(key, fetch)` reloads one object without ever going backwards: the
 * app fetches, the helper decides through the gate, in delivery order, whether
 * the result is newer than what the app holds, and only then calls its `apply`.
 *
 * Nothing here throws into centrifuge-js: malformed publications, failed loads
 * and exceptions from the app's own handlers are reported on 'error'.
 *
 * @param {import('./index.js').SubscriptionLike} subscription
 * @param {import('./index.js').SyncOptions} options
 */
export function syncSubscription(subscription, {
  load,
  gateOptions,
  gate = createVersionGate(gateOptions),
  minReloadDelay = 500,
  maxReloadDelay = 10000,
  maxBuffered = 10000,
  unsubscribeOnDispose = false
}) {
  if (typeof load !== 'function') throw new TypeError('options.load must be a function')
  // A map or shared-poll subscription keeps its own state ('sync' + key changes,
  // not envelopes): the helper would miss the state and reject every change.
  if (subscription.remove || subscription.track) throw new TypeError('not a stream subscription')

  let handlers = {}
  /** What waits for a load to finish (envelopes and finished reloadKey fetches); null once live. */
  let buffer = []
  let subscribedBefore = false
  let liveBefore = false
  let unsubscribed = false
  let loading = false
  let reloadReason
  let failures = 0
  let retryTimer
  let disposed = false
  /** Of the load in flight: aborted when superseded or disposed. */
  let loadAbort
  /** Of every reloadKey fetch: aborted on dispose. */
  const lifetime = new AbortController()
  /**
   * key -> envelopes held while a reloadKey of it runs (`.runs`: how many run,
   * `.applied`: how many results were applied since the first started).
   */
  const reloading = new Map()
  /** How many snapshots the gate adopted. */
  let loads = 0
  /** [resolve, reject] of the pending ready() promises. */
  let waiters = []

  const state = () =>
    disposed ? 'disposed' : unsubscribed ? 'unsubscribed' : !buffer ? 'live' : liveBefore ? 'resyncing' : 'loading'

  const settle = (outcome, value) => {
    for (const waiter of waiters) waiter[outcome](value)
    waiters = []
  }
  const ended = () => new Error(`centrifugo-async-client: ${state()}`)

  const emit = (event, ...args) => {
    for (const handler of handlers[event] || []) {
      try {
        handler(...args)
      } catch (error) {
        if (event !== 'error') report(error, { phase: 'handler', event })
      }
    }
  }

  const report = (error, context) => {
    if (handlers.error?.length) emit('error', error, context)
    else console.error('centrifugo-async-client:', error, context)
  }

  const guarded = listener => ctx => {
    try {
      listener(ctx)
    } catch (error) {
      report(error, { phase: 'listener' })
    }
  }

  /** Route one envelope or finished fetch: buffer, hold, or decide now. */
  const deliver = item => {
    if (buffer) return buffer.push(item)
    if (item.done) return finishReload(item)
    const held = reloading.get(item.key)
    if (held) return held.push(item)
    const { accepted, reason } = gate.accept(item)
    emit(accepted ? (item.deleted ? 'delete' : 'update') : 'drop', item, { reason })
  }

  /**
   * Apply a reloadKey result if it is newer than what the app holds; then release
   * the key. When the gate does not know the key (evicted), or the result has no
   * version, only a result read after everything the app applied since the call
   * can be trusted: none of the key's results applied and no snapshot adopted
   * since the fetch started.
   */
  const finishReload = job => {
    const { key, fetched, done } = job
    const held = reloading.get(key)
    const fresh = job.loads === loads && job.applied === held.applied
    let applied = false
    if (
      fetched &&
      (fetched.version === undefined
        ? fresh && (gate.forget(key), 1)
        : (fresh || gate.version(key) !== undefined) && gate.seed(key, fetched.version, !!fetched.deleted))
    ) {
      held.applied++
      try {
        fetched.apply()
        applied = true
      } catch (error) {
        report(error, { phase: 'reload', key })
      }
    }
    if (!--held.runs) {
      reloading.delete(key)
      for (const envelope of held) deliver(envelope)
    }
    done(applied)
  }

  const runLoad = async reason => {
    loading = true
    loadAbort = new AbortController()
    // What arrived before this call is in the snapshot, which is read after it.
    // Replayed after it, an update of an object the snapshot no longer lists
    // (deleted) would bring it back: drop it (finished fetches stay: they wait).
    buffer = buffer.filter(item => item.done)
    let failure
    try {
      const { items } = await load({ reason, signal: loadAbort.signal })
      if (!disposed && !reloadReason) {
        gate.replace(items)
        loads++
      }
    } catch (error) {
      failure = { error }
    }
    loading = false
    if (disposed) return
    if (reloadReason) {
      const next = reloadReason
      reloadReason = undefined
      return runLoad(next)
    }
    if (failure) {
      const retryIn = Math.min(maxReloadDelay, minReloadDelay * 2 ** failures++ * (1 + Math.random()))
      report(failure.error, { phase: 'load', attempt: failures, retryIn })
      retryTimer = setTimeout(() => startLoad(reason), retryIn)
      return
    }
    failures = 0
    const replay = buffer
    buffer = null
    for (const item of replay) {
      if (disposed) return
      deliver(item)
    }
    if (!buffer) {
      liveBefore = true
      emit('ready', { reason })
      settle(0)
    }
  }

  const startLoad = reason => {
    runLoad(reason).catch(error => report(error, { phase: 'load' }))
  }

  /** Supersede the load in flight (stopping it), or start one. */
  const requestLoad = reason => {
    if (loading) {
      reloadReason = reason
      loadAbort.abort()
    } else {
      clearTimeout(retryTimer)
      startLoad(reason)
    }
  }

  /** Buffer again and reload; before the first `subscribed` the initial load covers it. */
  const resync = reason => {
    if (disposed) return
    buffer ||= []
    emit('resync', { reason })
    if (subscribedBefore) requestLoad(reason)
  }

  const onPublication = guarded(ctx => {
    let envelope
    try {
      envelope = parseEnvelope(ctx.data)
    } catch (error) {
      return report(error, { phase: 'parse', publication: ctx })
    }
    deliver(envelope)
    if (buffer?.length > maxBuffered) {
      // Keep finished fetches (their promises wait); drop the envelopes and reload after them.
      buffer = buffer.filter(item => item.done)
      for (const held of reloading.values()) held.length = 0
      emit('resync', { reason: 'buffer-overflow' })
      if (loading) requestLoad('buffer-overflow')
    }
  })

  const onSubscribed = guarded(ctx => {
    unsubscribed = false
    if (!subscribedBefore) {
      subscribedBefore = true
      requestLoad('initial')
    } else if (!(ctx.wasRecovering && ctx.recovered)) {
      resync(ctx.wasRecovering ? 'recovery-failed' : 'resubscribed')
    }
  })

  const onUnsubscribed = guarded(({ code, reason }) => {
    unsubscribed = true
    const error = new Error(`subscription ended: ${reason} (code ${code})`)
    // Code 0: the app called unsubscribe() itself.
    if (code) report(error, { phase: 'unsubscribed', code, reason })
    settle(1, error)
  })

  const listeners = { publication: onPublication, subscribed: onSubscribed, unsubscribed: onUnsubscribed }
  for (const event in listeners) subscription.on(event, listeners[event])
  queueMicrotask(() => {
    if (disposed || subscribedBefore) return
    if (subscription.state === 'subscribed') return onSubscribed({})
    try {
      subscription.subscribe()
    } catch (error) {
      report(error, { phase: 'subscribe' })
    }
  })

  return {
    gate,

    get state() {
      return state()
    },

    ready: () =>
      new Promise((resolve, reject) => {
        const now = state()
        if (now === 'live') resolve()
        else if (now === 'disposed' || now === 'unsubscribed') reject(ended())
        else waiters.push([resolve, reject])
      }),

    on(event, handler) {
      (handlers[event] ||= []).push(handler)
      return () => {
        handlers[event] = handlers[event]?.filter(other => other !== handler)
      }
    },

    resync: (reason = 'manual') => resync(reason),

    async reloadKey(key, fetch) {
      if (disposed) return false
      let held = reloading.get(key)
      if (!held) {
        reloading.set(key, (held = []))
        held.runs = held.applied = 0
      }
      held.runs++
      const job = { key, loads, applied: held.applied }
      try {
        job.fetched = await fetch({ key, signal: lifetime.signal })
      } catch (error) {
        if (!disposed) report(error, { phase: 'reload', key })
      }
      return disposed ? false : new Promise(done => deliver(Object.assign(job, { done })))
    },

    dispose() {
      if (disposed) return
      disposed = true
      for (const event in listeners) subscription.removeListener(event, listeners[event])
      clearTimeout(retryTimer)
      lifetime.abort()
      loadAbort?.abort()
      for (const item of buffer || []) item.done?.(false)
      buffer = null
      handlers = {}
      settle(1, ended())
      if (unsubscribeOnDispose) {
        try {
          subscription.unsubscribe()
        } catch {}
      }
    }
  }
}
