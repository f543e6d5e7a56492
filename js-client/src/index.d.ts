/** Major schema version this reader understands (1). */
export declare const ENVELOPE_VERSION: 1

/** Largest object version, 2**53 - 1. */
export declare const MAX_OBJECT_VERSION: number

/** Deepest nesting of containers inside any envelope field (100). */
export declare const MAX_DEPTH: number

/** One message for one object, as published by the Python library (envelope v1): an update, or a delete (`deleted: true`). */
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
  /** Present (and true) only on a delete: the object is gone as of `version`, and `data` is null. */
  deleted?: true
  /** The publisher's W3C trace context (`00-<trace id>-<span id>-<flags>`), when it traces. */
  traceparent?: string
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

/** One object of a full snapshot: its version, or a tombstone (`deleted: true`). */
export interface SnapshotItem {
  key: string
  version: number
  deleted?: boolean
}

export interface VersionGate {
  /**
   * Remember that `key` is at least at `version` (a tombstone if `deleted`); marks
   * it most recently used. Returns true when it advanced (the key was unknown or
   * older): false means what was loaded is not newer than what the app holds.
   */
  seed(key: string, version: number, deleted?: boolean): boolean
  /** Decide on one update or delete; records its version (a tombstone for a delete) when accepted. */
  accept(envelope: Pick<Envelope, 'key' | 'version' | 'deleted'>): GateDecision
  /** The newest known version of `key` (a tombstone's too), or undefined. */
  version(key: string): number | undefined
  /** True when the newest known version of `key` is a delete. */
  isDeleted(key: string): boolean
  /** Forget `key` as if evicted: its updates are dropped as 'evicted' until it is seeded again. */
  forget(key: string): void
  /**
   * Adopt a full snapshot: its keys take its versions; a known key missing from it
   * becomes a tombstone at its known version. The evicted-keys filter is kept: an
   * evicted key may be a deleted one, whose late updates must not pass as new.
   */
  replace(items: Iterable<SnapshotItem>): void
  /** Forget every key, tombstones included, and the evicted-keys filter (statistics are kept). */
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

/** What centrifuge-js passes to 'unsubscribed' listeners (the part used here). */
export interface UnsubscribedLike {
  code: number
  reason: string
}

/**
 * The part of a centrifuge-js stream `Subscription` the helper uses. A map or
 * shared-poll subscription (`newMapSubscription`, `newSharedPollSubscription`)
 * does not fit: it keeps its own state (a 'sync' snapshot, then key changes
 * and removals as map entries, not envelopes), so the helper would miss the
 * state and take the changes for malformed envelopes.
 */
export interface SubscriptionLike {
  state?: string
  on(event: 'publication', listener: (ctx: PublicationLike) => void): unknown
  on(event: 'subscribed', listener: (ctx: SubscribedLike) => void): unknown
  on(event: 'unsubscribed', listener: (ctx: UnsubscribedLike) => void): unknown
  removeListener(event: 'publication' | 'subscribed' | 'unsubscribed', listener: (...args: any[]) => void): unknown
  subscribe(): void
  unsubscribe(): void
  /** Only a map subscription has it. */
  remove?: never
  /** Only a shared-poll subscription has it. */
  track?: never
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
  /**
   * Every object the app now holds, with the version its data is at, and any
   * tombstones the backend reports (`deleted: true`). A key the helper knew
   * that is missing here is gone.
   */
  items: Iterable<SnapshotItem>
  [extra: string]: unknown
}

export interface LoadContext {
  /** Why this load runs. */
  reason: LoadReason
  /** Aborted when a newer load supersedes this one or the helper is disposed: stop, and do not write into the store. */
  signal: AbortSignal
}

/** What `reloadKey`'s fetch resolves: the object as the backend has it now, and how to apply it. */
export interface FetchedObject {
  /** Its version; leave it out for an object that does not exist and whose deletion version is unknown. */
  version?: number
  /** A tombstone: the object is deleted (at `version`, when known). */
  deleted?: boolean
  /** Write the object into the app's store (or remove it). Called only when it is newer than what the app holds. */
  apply(): void
}

export interface FetchContext {
  key: string
  /** Aborted when the helper is disposed. */
  signal: AbortSignal
}

/** Where the synced subscription is: see `SyncedSubscription.state`. */
export type SyncState = 'loading' | 'live' | 'resyncing' | 'unsubscribed' | 'disposed'

export interface SyncOptions {
  /**
   * Fetch the current state from your backend, apply it to your store, and
   * resolve with the versions it is at. Publications are buffered meanwhile.
   * The snapshot must not be older than the call (no cached response, no
   * lagging replica). A rejection is reported on 'error' and retried with
   * backoff; a load whose `signal` is aborted is not used.
   */
  load(context: LoadContext): Promise<LoadResult> | LoadResult
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
  | { phase: 'reload'; key: string }
  | { phase: 'unsubscribed'; code: number; reason: string }
  | { phase: 'handler'; event: keyof SyncEvents }
  | { phase: 'listener' }
  | { phase: 'subscribe' }

export interface SyncEvents<Data = unknown> {
  /** An update that passed the gate: apply it. */
  update(envelope: Envelope<Data>, info: { reason: AcceptReason }): void
  /** A delete that passed the gate (`envelope.deleted`): remove `envelope.key`. */
  delete(envelope: Envelope<null>, info: { reason: AcceptReason }): void
  /** An update the gate dropped; on 'evicted', `reloadKey()` that key. */
  drop(envelope: Envelope<Data>, info: { reason: DropReason }): void
  /** A resync started: publications are buffered until the reload finishes. */
  resync(info: { reason: LoadReason }): void
  /**
   * A load finished and the buffered publications were replayed: the state is
   * live. `reason` is the reason of the load that finished: a resync requested
   * during a load supersedes it, so even the first 'ready' may carry another
   * reason than 'initial'.
   */
  ready(info: { reason: LoadReason }): void
  error(error: unknown, context: ErrorContext): void
}

/** Stops the handler from being called. */
export type Unbind = () => void

export interface SyncedSubscription<Data = unknown> {
  readonly gate: VersionGate
  /**
   * 'loading' until the first load is done, 'live' while updates apply as they
   * come, 'resyncing' during a reload, 'unsubscribed' while the subscription is
   * unsubscribed (by the server or the app), 'disposed' after `dispose()`.
   */
  readonly state: SyncState
  /** Resolves once the state is 'live' (at once if it is); rejects if the subscription is unsubscribed or the helper disposed first. */
  ready(): Promise<void>
  on<Event extends keyof SyncEvents<Data>>(event: Event, handler: SyncEvents<Data>[Event]): Unbind
  /** Reload now (buffering meanwhile), e.g. when the app suspects it missed something. */
  resync(reason?: string): void
  /**
   * Reload one object (after an 'evicted' drop) without ever going backwards:
   * `fetch` reads it, the helper calls its `apply()` only when it is newer than
   * what the app holds, in order with the live updates. Publications of `key`
   * wait meanwhile. Resolves true when `apply` ran; a failed fetch is reported
   * on 'error' (phase 'reload') and resolves false.
   */
  reloadKey(key: string, fetch: (context: FetchContext) => Promise<FetchedObject> | FetchedObject): Promise<boolean>
  /** Detach every listener this helper attached; the subscription stays subscribed unless `unsubscribeOnDispose`. */
  dispose(): void
}

export declare function syncSubscription<Data = unknown>(
  subscription: SubscriptionLike,
  options: SyncOptions
): SyncedSubscription<Data>
