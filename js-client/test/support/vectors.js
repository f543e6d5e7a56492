import { readFileSync } from 'node:fs'

/** The shared cross-language vectors in ../tests/vectors (written by the Python side). */
const vectorsDir = new URL('../../../tests/vectors/', import.meta.url)

export const readVectors = name => JSON.parse(readFileSync(new URL(`${name}.json`, vectorsDir), 'utf8'))
