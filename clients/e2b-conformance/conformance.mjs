// Conformance run of the unmodified e2b SDK against `turnbox serve --e2b`.
//
//   node conformance.mjs <sdk package>     e.g. e2b-2.51 or e2b-2.45
//
// The SDK finds the server through E2B_API_URL, E2B_SANDBOX_URL and
// E2B_API_KEY (scripts/test-e2b.sh starts the server and sets them). Every
// step asserts what the SDK returned or the SDK's own error type; the run
// stops at the first failure and exits 1. Sandboxes it made are killed on
// the way out.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'

const sdkName = process.argv[2]
if (!sdkName) {
  console.error('usage: node conformance.mjs <sdk package>')
  process.exit(2)
}
const sdk = await import(sdkName)
const { Sandbox, CommandExitError, NotFoundError, SandboxNotFoundError, AuthenticationError, TimeoutError } = sdk
const tag = `[${sdkName}]`
const made = []

// waitFor polls fn until it returns a truthy value, for at most ms.
async function waitFor(what, fn, ms = 10_000) {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

// rejects asserts that p fails with an error of class cls.
async function rejects(p, cls, what) {
  try {
    await p
  } catch (err) {
    assert.ok(err instanceof cls, `${what}: want ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`)
    return err
  }
  assert.fail(`${what}: succeeded, want ${cls.name}`)
}

const steps = []
const step = (name, fn) => steps.push({ name, fn })
const ctx = {}

step('create with metadata and envs', async () => {
  ctx.sbx = await Sandbox.create({ metadata: { suite: 'conformance', sdk: sdkName }, envs: { GREETING: 'hello' }, timeoutMs: 600_000 })
  made.push(ctx.sbx.sandboxId)
  assert.match(ctx.sbx.sandboxId, /^[a-z0-9]+$/)
  const info = await ctx.sbx.getInfo()
  assert.equal(info.sandboxId, ctx.sbx.sandboxId)
  assert.equal(info.state, 'running')
  assert.deepEqual(info.metadata, { suite: 'conformance', sdk: sdkName })
  assert.ok(info.endAt > info.startedAt, 'endAt after startedAt')
})

step('list filtered by metadata', async () => {
  const page = await Sandbox.list({ query: { metadata: { suite: 'conformance', sdk: sdkName } } }).nextItems()
  assert.ok(page.some((s) => s.sandboxId === ctx.sbx.sandboxId), 'our sandbox is listed')
  const none = await Sandbox.list({ query: { metadata: { suite: 'no-such-suite' } } }).nextItems()
  assert.equal(none.length, 0)
})

step('commands.run streams stdout and stderr', async () => {
  const out = []
  const errs = []
  const r = await ctx.sbx.commands.run('echo out; echo err >&2; echo $GREETING', {
    onStdout: (d) => out.push(d),
    onStderr: (d) => errs.push(d),
  })
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'out\nhello\n')
  assert.equal(r.stderr, 'err\n')
  assert.equal(out.join(''), 'out\nhello\n')
  assert.equal(errs.join(''), 'err\n')
})

step('commands.run: user, home and exit codes', async () => {
  const r = await ctx.sbx.commands.run('id -un; pwd')
  assert.equal(r.stdout, 'user\n/home/user\n')
  const root = await ctx.sbx.commands.run('id -un', { user: 'root' })
  assert.equal(root.stdout, 'root\n')
  const err = await rejects(ctx.sbx.commands.run('echo bad >&2; exit 3'), CommandExitError, 'exit 3')
  assert.equal(err.exitCode, 3)
  assert.equal(err.stderr, 'bad\n')
})

step('background command: list, reconnect, stdin, kill', async () => {
  const h = await ctx.sbx.commands.run('read line; echo got:$line; sleep 60', { background: true, stdin: true })
  const list = await ctx.sbx.commands.list()
  assert.ok(list.some((p) => p.pid === h.pid), 'the process is listed')
  await h.disconnect()
  let seen = ''
  const h2 = await ctx.sbx.commands.connect(h.pid, { onStdout: (d) => (seen += d) })
  await ctx.sbx.commands.sendStdin(h.pid, 'ping\n')
  await waitFor('output of the reconnected process', () => seen.includes('got:ping'))
  assert.equal(await ctx.sbx.commands.kill(h.pid), true)
  const err = await rejects(h2.wait(), CommandExitError, 'killed process')
  assert.notEqual(err.exitCode, 0)
  assert.equal(await ctx.sbx.commands.kill(h.pid), false, 'a second kill finds no process')
})

step('stdin closed ends the reader', async () => {
  const h = await ctx.sbx.commands.run('wc -c', { background: true, stdin: true })
  await ctx.sbx.commands.sendStdin(h.pid, 'abc')
  await ctx.sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  assert.equal(r.stdout.trim(), '3')
})

step('command timeout gives TimeoutError', async () => {
  await rejects(ctx.sbx.commands.run('sleep 30', { timeoutMs: 1500 }), TimeoutError, 'sleep past timeoutMs')
})

step('files: write, read, list, stat, rename, remove', async () => {
  const f = ctx.sbx.files
  const w = await f.write('/home/user/dir/a.txt', 'alpha\n')
  assert.equal(w.path, '/home/user/dir/a.txt')
  assert.equal(await f.read('/home/user/dir/a.txt'), 'alpha\n')
  assert.equal((await ctx.sbx.commands.run('cat dir/a.txt; stat -c %U dir/a.txt')).stdout, 'alpha\nuser\n')
  const rel = await f.write('rel.txt', 'relative\n')
  assert.equal(rel.path, '/home/user/rel.txt')
  const entries = await f.list('/home/user/dir')
  assert.deepEqual(entries.map((e) => [e.name, e.type]), [['a.txt', 'file']])
  const info = await f.getInfo('/home/user/dir/a.txt')
  assert.equal(info.size, 6)
  assert.equal(info.type, 'file')
  assert.equal(info.owner, 'user')
  await f.rename('/home/user/dir/a.txt', '/home/user/dir/b.txt')
  assert.equal(await f.exists('/home/user/dir/a.txt'), false)
  assert.equal(await f.exists('/home/user/dir/b.txt'), true)
  assert.equal(await f.makeDir('/home/user/dir/sub'), true)
  assert.equal(await f.makeDir('/home/user/dir/sub'), false, 'makeDir of an existing directory')
  await f.remove('/home/user/dir')
  assert.equal(await f.exists('/home/user/dir'), false)
  await rejects(f.read('/home/user/missing.txt'), NotFoundError, 'read a missing file')
})

step('files: watchDir sees a write', async () => {
  await ctx.sbx.files.makeDir('/home/user/watched')
  const events = []
  const w = await ctx.sbx.files.watchDir('/home/user/watched', (e) => events.push(e))
  await ctx.sbx.commands.run('echo x > /home/user/watched/x.txt')
  await waitFor('a watch event for x.txt', () => events.some((e) => e.name === 'x.txt'))
  await w.stop()
})

step('files: binary upload and download', async () => {
  const data = new Uint8Array(1 << 20)
  for (let i = 0; i < data.length; i++) data[i] = i % 256
  data.set(randomBytes(4096), 1000)
  await ctx.sbx.files.write('/home/user/blob.bin', data)
  const back = await ctx.sbx.files.read('/home/user/blob.bin', { format: 'bytes' })
  assert.equal(Buffer.compare(Buffer.from(back), Buffer.from(data)), 0)
  const sum = createHash('sha256').update(data).digest('hex')
  assert.equal((await ctx.sbx.commands.run('sha256sum blob.bin')).stdout.split(' ')[0], sum)
})

step('pty: input, output, resize', async () => {
  let screen = ''
  const dec = new TextDecoder()
  const pty = await ctx.sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (screen += dec.decode(d)) })
  const enc = new TextEncoder()
  await ctx.sbx.pty.sendInput(pty.pid, enc.encode('echo pty-$((6*7))\n'))
  await waitFor('pty output', () => screen.includes('pty-42'))
  await ctx.sbx.pty.resize(pty.pid, { cols: 100, rows: 30 })
  await ctx.sbx.pty.sendInput(pty.pid, enc.encode('stty size\n'))
  await waitFor('the new terminal size', () => screen.includes('30 100'))
  assert.equal(await ctx.sbx.pty.kill(pty.pid), true)
})

step('pause, pause again, connect', async () => {
  await ctx.sbx.files.write('/home/user/persist.txt', 'kept\n')
  assert.equal(await ctx.sbx.pause(), true)
  assert.equal(await Sandbox.pause(ctx.sbx.sandboxId), false, 'pausing a paused sandbox (409)')
  assert.equal((await ctx.sbx.getInfo()).state, 'paused')
  ctx.sbx = await Sandbox.connect(ctx.sbx.sandboxId)
  assert.equal((await ctx.sbx.getInfo()).state, 'running')
  assert.equal((await ctx.sbx.commands.run('cat persist.txt')).stdout, 'kept\n')
})

step('snapshot, sandbox from snapshot', async () => {
  const snap = await ctx.sbx.createSnapshot()
  assert.ok(snap.snapshotId, 'a snapshot id')
  const listed = await Sandbox.listSnapshots({ sandboxId: ctx.sbx.sandboxId }).nextItems()
  assert.ok(listed.some((s) => s.snapshotId === snap.snapshotId), 'the snapshot is listed')
  await ctx.sbx.files.write('/home/user/persist.txt', 'changed after\n')
  const child = await Sandbox.create(snap.snapshotId, { timeoutMs: 120_000 })
  made.push(child.sandboxId)
  assert.notEqual(child.sandboxId, ctx.sbx.sandboxId)
  assert.equal(await child.files.read('/home/user/persist.txt'), 'kept\n')
  assert.equal((await child.commands.run('echo $GREETING')).stdout, 'hello\n', 'a snapshot keeps the envs')
  assert.equal(await child.kill(), true)
  // A snapshot is a template of its own: it outlives its sandbox (this
  // one stays: the next steps use it) and is deleted on request.
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false, 'deleted twice')
})

step('fork count 2, setTimeout', async () => {
  await ctx.sbx.files.write('/home/user/forked.txt', 'from the parent\n')
  const forks = await ctx.sbx.fork({ count: 2, timeoutMs: 120_000 })
  assert.equal(forks.length, 2)
  for (const f of forks) {
    assert.ok(!(f instanceof Error), `a fork failed: ${f?.message}`)
    made.push(f.sandboxId)
    assert.equal(await f.files.read('/home/user/forked.txt'), 'from the parent\n')
    assert.equal((await f.commands.run('echo $GREETING')).stdout, 'hello\n', 'a fork keeps the envs')
  }
  await forks[0].files.write('/home/user/forked.txt', 'changed in fork 0\n')
  assert.equal(await forks[1].files.read('/home/user/forked.txt'), 'from the parent\n', 'forks are independent')
  for (const f of forks) assert.equal(await f.kill(), true)
  const before = (await ctx.sbx.getInfo()).endAt
  await ctx.sbx.setTimeout(900_000)
  assert.ok((await ctx.sbx.getInfo()).endAt > before, 'setTimeout moved endAt')
})

// turnbox's own API (Connect JSON) on the same session id: a per-turn
// snapshot, a change, and a rollback in place, seen through the SDK.
step("turnbox's TurnComplete and Rollback on the sandbox's id", async () => {
  const call = async (method, body) => {
    const res = await fetch(`${process.env.E2B_API_URL}/turnbox.v1.SandboxService/${method}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(process.env.TURNBOX_TOKEN && { Authorization: `Bearer ${process.env.TURNBOX_TOKEN}` }) },
      body: JSON.stringify(body),
    })
    const out = await res.json()
    assert.ok(res.ok, `${method}: ${res.status} ${JSON.stringify(out)}`)
    return out
  }
  await ctx.sbx.files.write('/home/user/turn.txt', 'turn 1\n')
  const turn = await call('TurnComplete', { sessionId: ctx.sbx.sandboxId, label: 'after turn 1' })
  await ctx.sbx.commands.run('echo turn 2 > turn.txt; rm persist.txt')
  await call('Rollback', { sessionId: ctx.sbx.sandboxId, snapshotId: turn.snapshot.id })
  assert.equal(await ctx.sbx.files.read('/home/user/turn.txt'), 'turn 1\n')
  assert.equal(await ctx.sbx.files.exists('/home/user/persist.txt'), true)
})

step('errors: 404, 401, sandbox timeout', async () => {
  await rejects(Sandbox.connect('nosuchsandbox000000x'), NotFoundError, 'connect to an unknown sandbox')
  await rejects(Sandbox.getInfo('nosuchsandbox000000x'), SandboxNotFoundError, 'getInfo of an unknown sandbox')
  assert.equal(await Sandbox.kill('nosuchsandbox000000x'), false)
  await rejects(Sandbox.list({ apiKey: 'e2b_0000000000000000000000000000000000000000' }).nextItems(), AuthenticationError, 'a wrong API key')
  const short = await Sandbox.create({ timeoutMs: 2000 })
  made.push(short.sandboxId)
  await waitFor('the short-lived sandbox to be killed', async () => !(await short.isRunning()), 15_000)
  // What E2B's proxy answers for a sandbox past its end (502), as the SDK
  // maps it: a start is SandboxNotFoundError, other calls TimeoutError.
  await rejects(short.commands.run('true'), SandboxNotFoundError, 'a command in a timed-out sandbox')
  await rejects(short.files.read('/etc/hostname'), TimeoutError, 'a file read in a timed-out sandbox')
})

step('kill', async () => {
  assert.equal(await ctx.sbx.kill(), true)
  assert.equal(await Sandbox.kill(ctx.sbx.sandboxId), false, 'a second kill (404)')
})

let failed = false
for (const { name, fn } of steps) {
  const t0 = performance.now()
  try {
    await fn()
    console.log(`${tag} ok   ${name} (${(performance.now() - t0).toFixed(0)} ms)`)
  } catch (err) {
    console.error(`${tag} FAIL ${name}: ${err?.stack ?? err}`)
    failed = true
    break
  }
}
for (const id of made) await Sandbox.kill(id).catch(() => {})
if (failed) process.exit(1)
console.log(`${tag} all ${steps.length} steps passed`)
