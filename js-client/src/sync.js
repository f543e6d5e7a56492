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
 * subscription) starts a resync: buffer again, reload, reseed, replay.
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

  let handlers = {}
  /** Envelopes waiting for a load to finish; null once live. */
  let buffer = []
  let subscribedBefore = false
  let loading = false
  let reloadReason
  let failures = 0
  let retryTimer
  let disposed = false

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

  const apply = envelope => {
    const { accepted, reason } = gate.accept(envelope)
    emit(accepted ? 'update' : 'drop', envelope, { reason })
  }

  const runLoad = async reason => {
    loading = true
    let failure
    try {
      const { items } = await load({ reason })
      if (!disposed && !reloadReason) {
        gate.reset()
        for (const { key, version } of items) gate.seed(key, version)
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
    for (const envelope of replay) {
      if (disposed) return
      if (buffer) buffer.push(envelope)
      else apply(envelope)
    }
    if (!buffer) emit('ready', { reason })
  }

  const startLoad = reason => {
    runLoad(reason).catch(error => report(error, { phase: 'load' }))
  }

  const requestLoad = reason => {
    if (disposed) return
    buffer ||= []
    if (loading) {
      reloadReason = reason
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
    if (!buffer) return apply(envelope)
    buffer.push(envelope)
    if (buffer.length > maxBuffered) {
      buffer = []
      if (loading) reloadReason = 'buffer-overflow'
      emit('resync', { reason: 'buffer-overflow' })
    }
  })

  const onSubscribed = guarded(ctx => {
    if (!subscribedBefore) {
      subscribedBefore = true
      requestLoad('initial')
    } else if (!(ctx.wasRecovering && ctx.recovered)) {
      resync(ctx.wasRecovering ? 'recovery-failed' : 'resubscribed')
    }
  })

  subscription.on('publication', onPublication)
  subscription.on('subscribed', onSubscribed)
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

    on(event, handler) {
      (handlers[event] ||= []).push(handler)
      return () => {
        handlers[event] = handlers[event]?.filter(other => other !== handler)
      }
    },

    resync: (reason = 'manual') => resync(reason),

    dispose() {
      if (disposed) return
      disposed = true
      subscription.removeListener('publication', onPublication)
      subscription.removeListener('subscribed', onSubscribed)
      clearTimeout(retryTimer)
      buffer = null
      handlers = {}
      if (unsubscribeOnDispose) {
        try {
          subscription.unsubscribe()
        } catch {}
      }
    }
  }
}
