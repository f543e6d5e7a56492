/**
 * Real services for the integration tests: the Python devstack (Redis,
 * Centrifugo and the relay on 127.0.0.1), the Python publisher, and the
 * example app (examples/app) with its own stack. Every wait is bounded; every
 * process is stopped by the `stop()` of whoever started it.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url))
export const python = process.env.PYTHON || 'python'

/** Rejects with `what` in the message when `promise` takes longer than `ms`. */
export function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** The first stdout line of `child` that `parse` accepts (returns non-undefined). */
function firstLine(child, parse, what, timeoutMs, logs) {
  return withTimeout(
    new Promise((resolve, reject) => {
      let pending = ''
      child.stdout.on('data', chunk => {
        pending += chunk
        let newline
        while ((newline = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, newline)
          pending = pending.slice(newline + 1)
          const parsed = parse(line)
          if (parsed !== undefined) return resolve(parsed)
        }
      })
      child.once('exit', code => reject(new Error(`${what} exited with ${code} before it was ready:\n${logs()}`)))
      child.once('error', reject)
    }),
    timeoutMs,
    `${what} to start:\n${logs()}`
  )
}

/**
 * Stop a child politely (close stdin / SIGTERM), then insist (SIGKILL).
 * Resolves once it has exited.
 */
async function stopChild(child, { closeStdin = false, graceMs = 20000 } = {}) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  if (closeStdin) child.stdin.end()
  else child.kill('SIGTERM')
  try {
    await withTimeout(exited, graceMs, 'process exit')
    return
  } catch {}
  child.kill(closeStdin ? 'SIGTERM' : 'SIGKILL')
  try {
    await withTimeout(exited, 5000, 'process exit after a signal')
  } catch {
    child.kill('SIGKILL')
    await exited
  }
}

function spawnLogged(command, args, options) {
  const child = spawn(command, args, { cwd: repoRoot, ...options })
  let output = ''
  const keep = chunk => {
    output = (output + chunk).slice(-20000)
  }
  child.stderr?.on('data', keep)
  child.stdout?.on('data', keep)
  return { child, logs: () => output }
}

/**
 * `python -m devstack up --relay --shards N --until-stdin-closes`: resolves with
 * its address line ({redis_url, api_url, api_key, ws_url, http_url, shards,
 * relay_log}) and `stop()`, which closes its stdin so it tears everything down.
 * `freshness` is the relay's `--freshness` (default: the relay's own, monotonic).
 */
export async function startDevstack({ shards = 4, freshness = '', timeoutMs = 90000 } = {}) {
  const freshnessArgs = freshness ? ['--relay-freshness', freshness] : []
  const { child, logs } = spawnLogged(
    python,
    ['-m', 'devstack', 'up', '--relay', '--shards', String(shards), ...freshnessArgs, '--until-stdin-closes'],
    { stdio: ['pipe', 'pipe', 'pipe'] }
  )
  child.stdout.setEncoding('utf8')
  const parse = line => {
    try {
      const info = JSON.parse(line)
      return info && info.ws_url ? info : undefined
    } catch {
      return undefined
    }
  }
  try {
    const info = await firstLine(child, parse, 'devstack', timeoutMs, logs)
    return { ...info, logs, stop: () => stopChild(child, { closeStdin: true }) }
  } catch (error) {
    await stopChild(child, { closeStdin: true })
    throw error
  }
}

/** Run a Python snippet with `input` as JSON on stdin; resolves with its stdout parsed as JSON. */
export async function runPython(source, input, { timeoutMs = 60000 } = {}) {
  const { child, logs } = spawnLogged(python, ['-c', source], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  child.stdout.on('data', chunk => {
    stdout += chunk
  })
  child.stdin.end(JSON.stringify(input))
  const [code] = await withTimeout(once(child, 'exit'), timeoutMs, 'python snippet').catch(async error => {
    await stopChild(child, { graceMs: 1000 })
    throw error
  })
  if (code !== 0) throw new Error(`python exited with ${code}:\n${logs()}`)
  return JSON.parse(stdout)
}

const PUBLISH_SOURCE = `
import json, sys
from centrifugo_async import Publisher

request = json.load(sys.stdin)
published = []
with Publisher.from_url(request["redis_url"], shards=request["shards"]) as publisher:
    for message in request["messages"]:
        if message.get("deleted"):
            envelope = publisher.delete(
                message["channel"],
                key=message["key"],
                version=message["version"],
                idempotency_key=message.get("idempotency_key"),
            )
        else:
            envelope = publisher.publish(
                message["channel"],
                message["data"],
                key=message["key"],
                version=message["version"],
                idempotency_key=message.get("idempotency_key"),
            )
        published.append({"key": envelope.key, "version": envelope.version,
                           "shard": envelope.shard, "seq": envelope.seq})
json.dump(published, sys.stdout)
`

/**
 * Enqueue `messages` ({channel, key, version, data, idempotency_key?}, or
 * {channel, key, version, deleted: true} for a delete) with the Python library's
 * Publisher, in order; resolves with their {key, version, shard, seq}.
 */
export const publishWithPython = (devstack, messages) =>
  runPython(PUBLISH_SOURCE, { redis_url: devstack.redis_url, shards: devstack.shards, messages })

/** The offset of the newest publication in `channel` (0 when empty): how many were delivered. */
export async function streamTop(devstack, channel) {
  const response = await fetch(`${devstack.api_url}/history`, {
    method: 'POST',
    headers: { 'X-API-Key': devstack.api_key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, limit: 0 }),
    signal: AbortSignal.timeout(5000)
  })
  const reply = await response.json()
  if (reply.error) throw new Error(`history of ${channel}: ${JSON.stringify(reply.error)}`)
  return Number(reply.result.offset ?? 0)
}

/**
 * The example app with its own stack (`python -m examples.app`: Redis,
 * Centrifugo, the relay and the Starlette backend) on free ports; resolves with
 * its URL, what its launcher printed about the stack ({redis_url, shards,
 * channel}, enough for `publishWithPython`), the relay's log path and `stop()`,
 * which closes its stdin so it stops everything it started. With `outbox`
 * (`--outbox`: PostgreSQL, the outbox forwarder and a supervised backend)
 * instead of `dbPath`, also the database's `dsn` and the forwarder's and the
 * backend's log paths.
 */
export async function startExampleApp({ dbPath, outbox = false, shards = 4, timeoutMs = 90000 }) {
  const storage = outbox ? ['--outbox'] : ['--db', dbPath]
  const { child, logs } = spawnLogged(
    python,
    ['-m', 'examples.app', '--port', '0', ...storage, '--shards', String(shards), '--until-stdin-closes'],
    { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } }
  )
  child.stdout.setEncoding('utf8')
  const parse = line => line.match(/^open\s+(http:\/\/127\.0\.0\.1:\d+)/)?.[1]
  const stop = () => stopChild(child, { closeStdin: true, graceMs: 40000 })
  try {
    const url = await firstLine(child, parse, 'example app', timeoutMs, logs)
    const banner = name => logs().match(new RegExp(`^${name}\\s+(\\S+)`, 'm'))?.[1]
    const logOf = name => logs().match(new RegExp(`^${name}\\s+pid \\d+, log (\\S+)`, 'm'))?.[1]
    const started = { url, redis_url: banner('redis'), shards, channel: banner('channel'), relayLog: logOf('relay') }
    if (outbox) Object.assign(started, { dsn: banner('database'), forwarderLog: logOf('forwarder'), backendLog: logOf('backend') })
    return { ...started, logs, stop }
  } catch (error) {
    await stop()
    throw error
  }
}
