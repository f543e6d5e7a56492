/** Major schema version this reader understands (1). */
export declare const ENVELOPE_VERSION: 1

/** Largest object version, 2**53 - 1. */
export declare const MAX_OBJECT_VERSION: number

/** Deepest nesting of containers inside any envelope field (100). */
export declare const MAX_DEPTH: number

/** One message for one object, as published by the Python library (envelope v1). */
export interface Envelope<Data = unknown> {
  /** Major schema version; always 1 here. */
  v: 1
  channel: string
  /** Object key: every update of one object carries the same key. */
  key: string
  /** Object version from the backend's database, 0..2**53-1. */
  version: number
  /** Per-shard sequence number, >= 1. */
  seq: number
  /** Shard the message travelled on, >= 0. */
  shard: number
  /** Enqueue time, milliseconds since the epoch. */
  ts: number
  data: Data
  tags?: Record<string, string>
  idempotency_key?: string
  ttl_ms?: number
}

/** Why `parseEnvelope` refused its input, as the relay's dead-letter reason. */
export type EnvelopeErrorReason =
  | 'invalid_envelope'
  | 'invalid_unicode'
  | 'too_deep'
  | 'number_out_of_range'

/** Thrown by `parseEnvelope`; `field` names the offending field when there is one. */
export declare class EnvelopeError extends Error {
  name: 'EnvelopeError'
  field: string | undefined
  /** The rule broken: the envelope rules, or the JSON profile (UTF-8, depth, numbers). */
  reason: EnvelopeErrorReason
  constructor(problem: string, field?: string, reason?: EnvelopeErrorReason)
}

/**
 * Validate a publication's `data` (an object, or JSON text as a string or bytes)
 * as an envelope v1, with the same rules as Python's `decode_envelope`,
 * including the JSON profile (UTF-8, nesting within `MAX_DEPTH`, finite
 * numbers). Unknown fields are ignored. Throws `EnvelopeError`.
 */
export declare function parseEnvelope<Data = unknown>(input: unknown): Envelope<Data>

/** 32-bit FNV-1a of a string's UTF-8 bytes (or raw bytes), unsigned. */
export declare function fnv1a32(input: string | Uint8Array): number

/** The shard of `key` among `shards`: `fnv1a32(key) % shards`, as the publisher routes it. */
export declare function shardFor(key: string, shards: number): number

/** The 3 bit positions of `key` in an evicted-keys filter of `bits` bits. */
export declare function bloomPositions(key: string, bits: number): number[]

export type AcceptReason = 'new' | 'newer'
export type DropReason = 'stale' | 'duplicate' | 'evicted'
export type GateReason = AcceptReason | DropReason

export type GateDecision =
  | { accepted: true; reason: AcceptReason }
  | { accepted: false; reason: DropReason }

export interface GateStats {
  /** Keys currently remembered (<= maxKeys). */
  size: number
  /** Updates let through ('new' + 'newer'). */
  accepted: number
  /** Updates dropped as 'stale'. */
  stale: number
  /** Updates dropped as 'duplicate'. */
  duplicate: number
  /** Updates dropped as 'evicted' (the key might have been forgotten). */
  evicted: number
}

export interface VersionGateOptions {
  /** Most keys remembered at once; the least recently used one is evicted beyond it. Default 10000. */
  maxKeys?: number
  /** Size in bits of the Bloom filter of evicted keys. Default 65536 (8 KiB). */
  evictedFilterBits?: number
}

export interface VersionGate {
  /** Remember that `key` is at least at `version` (from a load); marks it most recently used. */
  seed(key: string, version: number): void
  /** Decide on one update; records its version when accepted. */
  accept(envelope: Pick<Envelope, 'key' | 'version'>): GateDecision
  /** The newest known version of `key`, or undefined. */
  version(key: string): number | undefined
  /** Forget every key and the evicted-keys filter (statistics are kept). */
  reset(): void
  stats(): GateStats
}

export declare function createVersionGate(options?: VersionGateOptions): VersionGate

/** What centrifuge-js passes to 'publication' listeners (the part used here). */
export interface PublicationLike {
  data: unknown
  channel?: string
  offset?: number
  tags?: Record<string, string>
}

/** What centrifuge-js passes to 'subscribed' listeners (the part used here). */
export interface SubscribedLike {
  wasRecovering?: boolean
  recovered?: boolean
}

/** The part of a centrifuge-js `Subscription` the helper uses. */
export interface SubscriptionLike {
  state?: string
  on(event: 'publication', listener: (ctx: PublicationLike) => void): unknown
  on(event: 'subscribed', listener: (ctx: SubscribedLike) => void): unknown
  removeListener(event: 'publication' | 'subscribed', listener: (...args: any[]) => void): unknown
  subscribe(): void
  unsubscribe(): void
}

/** Why a load runs: the first one, or why a resync started. */
export type LoadReason =
  | 'initial'
  | 'recovery-failed'
  | 'resubscribed'
  | 'buffer-overflow'
  | 'manual'
  | (string & {})

export interface LoadResult {
  /** Every object the app now holds, with the version its data is at. */
  items: Iterable<{ key: string; version: number }>
  [extra: string]: unknown
}

export interface SyncOptions {
  /**
   * Fetch the current state from your backend, apply it to your store, and
   * resolve with the versions it is at. Publications are buffered meanwhile.
   * A rejection is reported on 'error' and retried with backoff.
   */
  load(context: { reason: LoadReason }): Promise<LoadResult> | LoadResult
  /** A gate to use instead of a new one. */
  gate?: VersionGate
  /** Options for the new gate when `gate` is not given. */
  gateOptions?: VersionGateOptions
  /** First retry delay after a failed load, ms (jittered, doubling). Default 500. */
  minReloadDelay?: number
  /** Longest retry delay, ms. Default 10000. */
  maxReloadDelay?: number
  /** Most publications buffered during a load; beyond it the buffer is dropped and the load redone. Default 10000. */
  maxBuffered?: number
  /** Also unsubscribe the subscription on dispose(). Default false. */
  unsubscribeOnDispose?: boolean
}

export type ErrorContext =
  | { phase: 'parse'; publication: PublicationLike }
  | { phase: 'load'; attempt?: number; retryIn?: number }
  | { phase: 'handler'; event: keyof SyncEvents }
  | { phase: 'listener' }
  | { phase: 'subscribe' }

export interface SyncEvents<Data = unknown> {
  /** An update that passed the gate: apply it. */
  update(envelope: Envelope<Data>, info: { reason: AcceptReason }): void
  /** An update the gate dropped; on 'evicted', reload that key and `gate.seed()` it. */
  drop(envelope: Envelope<Data>, info: { reason: DropReason }): void
  /** A resync started: publications are buffered until the reload finishes. */
  resync(info: { reason: LoadReason }): void
  /** A load finished and the buffered publications were replayed. */
  ready(info: { reason: LoadReason }): void
  error(error: unknown, context: ErrorContext): void
}

/** Stops the handler from being called. */
export type Unbind = () => void

export interface SyncedSubscription<Data = unknown> {
  readonly gate: VersionGate
  on<Event extends keyof SyncEvents<Data>>(event: Event, handler: SyncEvents<Data>[Event]): Unbind
  /** Reload now (buffering meanwhile), e.g. when the app suspects it missed something. */
  resync(reason?: string): void
  /** Detach every listener this helper attached; the subscription stays subscribed unless `unsubscribeOnDispose`. */
  dispose(): void
}

export declare function syncSubscription<Data = unknown>(
  subscription: SubscriptionLike,
  options: SyncOptions
): SyncedSubscription<Data>
