export { ENVELOPE_VERSION, EnvelopeError, MAX_DEPTH, MAX_OBJECT_VERSION, parseEnvelope } from './envelope.js'
export { bloomPositions, createVersionGate } from './gate.js'
export { fnv1a32, shardFor } from './routing.js'
export { syncSubscription } from './sync.js'
