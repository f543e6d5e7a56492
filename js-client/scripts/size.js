// `npm run size`: bundle src/index.js the way an app's bundler would (minified
// ESM), gzip it, print the size and fail when it exceeds the budget.
import { build } from 'esbuild'
import { gzipSync } from 'node:zlib'

// The budget is the measured size plus ~100 B, raised on purpose by features:
// 2,560 B at first; deletes (tombstones, snapshot reconciliation), reloadKey,
// the state/ready() API, AbortSignal and 'unsubscribed' handling added ~0.65 KB;
// parseEnvelope's JSON profile checks (UTF-8, depth, finite numbers, `reason`)
// ~0.33 KB more; `traceparent` ~30 B: 3,575 B measured with all of them.
const BUDGET_BYTES = 3675

const result = await build({
  entryPoints: [new URL('../src/index.js', import.meta.url).pathname],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  write: false,
  legalComments: 'none'
})
const minified = result.outputFiles[0].contents
const gzipped = gzipSync(minified, { level: 9 }).length

console.log(`centrifugo-async-client: ${minified.length} B minified, ${gzipped} B gzipped (budget ${BUDGET_BYTES} B)`)
if (gzipped > BUDGET_BYTES) {
  console.error(`size budget exceeded by ${gzipped - BUDGET_BYTES} B`)
  process.exit(1)
}
