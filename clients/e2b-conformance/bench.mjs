// Side-by-side latency of the same work through the e2b SDK and through
// turnbox's own API (Connect JSON over fetch, no SDK), against one
// `turnbox serve --e2b` (scripts/test-e2b.sh with TURNBOX_E2B_BENCH=1).
//
//   node bench.mjs <sdk package> [runs]
//
// Measures, alternating the clients run by run:
//   run-true:  the SDK's commands.run('true') (/bin/bash -l -c true as
//              user), the same envd Start request over fetch without the
//              SDK, and turnbox's ProcessService/StartAndFollow of the same
//              argv as the same user, on the same session id.
//   create:    the SDK's Sandbox.create() vs SandboxService/CreateSession,
//              each followed by a kill that is not timed; the next create
//              waits until the host's pool is full again (with --pool, a
//              create takes a pre-started sandbox).
// Prints medians and p90 in ms, and the ratio, as JSON on the last line.
const sdkName = process.argv[2]
const runs = Number(process.argv[3] ?? 50)
const { Sandbox } = await import(sdkName)
const base = process.env.E2B_API_URL
const token = process.env.TURNBOX_TOKEN

// call makes a unary Connect JSON call to turnbox's own API.
async function call(service, method, body) {
  const res = await fetch(`${base}/turnbox.v1.${service}/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(token && { Authorization: `Bearer ${token}` }) },
    body: JSON.stringify(body),
  })
  const out = await res.json()
  if (!res.ok) throw new Error(`${method}: ${res.status} ${JSON.stringify(out)}`)
  return out
}

// follow makes a server-streaming Connect JSON call of turnbox's API
// and returns its messages.
const follow = (service, method, body) =>
  stream(`turnbox.v1.${service}/${method}`, body, token ? { Authorization: `Bearer ${token}` } : {})

// stream makes a server-streaming Connect JSON call and returns its
// messages (each frame: flags byte, big-endian length, JSON).
async function stream(procedure, body, headers) {
  const json = Buffer.from(JSON.stringify(body))
  const frame = Buffer.alloc(5 + json.length)
  frame.writeUInt32BE(json.length, 1)
  json.copy(frame, 5)
  const res = await fetch(`${base}/${procedure}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/connect+json', ...headers },
    body: frame,
  })
  const buf = Buffer.from(await res.arrayBuffer())
  const msgs = []
  for (let off = 0; off + 5 <= buf.length; ) {
    const flags = buf[off]
    const n = buf.readUInt32BE(off + 1)
    const msg = JSON.parse(buf.subarray(off + 5, off + 5 + n).toString())
    off += 5 + n
    if (flags & 2) {
      if (msg.error) throw new Error(`${procedure}: ${JSON.stringify(msg.error)}`)
      break
    }
    msgs.push(msg)
  }
  return msgs
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { median: +q(0.5).toFixed(2), p90: +q(0.9).toFixed(2), n: s.length }
}
const timed = async (fn) => {
  const t0 = performance.now()
  await fn()
  return performance.now() - t0
}

async function poolFull() {
  const end = Date.now() + 30_000
  for (;;) {
    const res = await fetch(`${base}/metrics`)
    const text = await res.text()
    const ready = Number(/^turnbox_pool_ready\S*\s+(\S+)/m.exec(text)?.[1] ?? 0)
    const want = Number(process.env.TURNBOX_E2B_POOL ?? 1)
    if (ready >= want || Date.now() > end) return
    await new Promise((r) => setTimeout(r, 20))
  }
}

const sbx = await Sandbox.create({ timeoutMs: 600_000 })
const argv = ['/bin/bash', '-l', '-c', 'true']
// envdRaw is the SDK's request without the SDK: the same Start call,
// headers and body, over fetch.
const envdRaw = () =>
  stream('process.Process/Start', { process: { cmd: argv[0], args: argv.slice(1) }, stdin: false }, {
    'E2b-Sandbox-Id': sbx.sandboxId,
    'X-Access-Token': sbx.envdAccessToken,
    'Keepalive-Ping-Interval': '50',
  })
const own = () => follow('ProcessService', 'StartAndFollow', { sessionId: sbx.sandboxId, config: { args: argv, user: 'user' } })
const sdkRun = []
const rawRun = []
const ownRun = []
for (let i = 0; i < 5; i++) {
  await sbx.commands.run('true')
  await envdRaw()
  await own()
}
for (let i = 0; i < runs; i++) {
  sdkRun.push(await timed(() => sbx.commands.run('true')))
  rawRun.push(await timed(envdRaw))
  ownRun.push(await timed(own))
}
await sbx.kill()

const creates = Math.max(10, Math.floor(runs / 3))
const sdkCreate = []
const ownCreate = []
for (let i = 0; i < creates; i++) {
  await poolFull()
  let s
  sdkCreate.push(await timed(async () => (s = await Sandbox.create({ timeoutMs: 60_000 }))))
  await s.kill()
  await poolFull()
  let id
  ownCreate.push(await timed(async () => (id = (await call('SandboxService', 'CreateSession', { config: {} })).session.id)))
  await call('SandboxService', 'DestroySession', { sessionId: id })
}

const report = {
  sdk: sdkName,
  run_true_ms: { e2b_sdk: stats(sdkRun), envd_without_sdk: stats(rawRun), turnbox_api: stats(ownRun) },
  create_ms: { e2b_sdk: stats(sdkCreate), turnbox_api: stats(ownCreate) },
}
report.run_true_ms.sdk_minus_turnbox_median = +(report.run_true_ms.e2b_sdk.median - report.run_true_ms.turnbox_api.median).toFixed(2)
report.create_ms.ratio_median = +(report.create_ms.e2b_sdk.median / report.create_ms.turnbox_api.median).toFixed(2)
console.log(JSON.stringify(report))
