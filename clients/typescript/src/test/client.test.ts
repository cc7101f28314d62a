// Tests of the client against a real `turnbox serve` (scripts/test-clients.sh
// starts one on loopback and sets TURNBOX_URL and TURNBOX_TOKEN).

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  FileNotFoundError,
  InvalidArgumentError,
  NotActiveError,
  PathEscapesError,
  ProcessNotFoundError,
  Sandbox,
  SessionNotFoundError,
  SnapshotNotFoundError,
  TurnboxClient,
  TurnboxError,
  UnauthenticatedError,
  UnavailableError,
  encodeToolInput,
  type ToolEvent,
} from "../index.js";

const url = process.env.TURNBOX_URL ?? "";
const token = process.env.TURNBOX_TOKEN ?? "";
if (!url && process.env.CI) throw new Error("TURNBOX_URL is not set: run scripts/test-clients.sh");
const skip = url ? false : "TURNBOX_URL not set: run scripts/test-clients.sh";

const client = new TurnboxClient({ baseUrl: url || "http://127.0.0.1:1", token, timeoutMs: 30_000 });
const made: Sandbox[] = [];

async function session(): Promise<Sandbox> {
  const sb = await client.create();
  made.push(sb);
  return sb;
}

after(async () => {
  for (const sb of made) await sb.destroy().catch(() => {});
});

describe("host", { skip }, () => {
  it("reports health and capabilities", async () => {
    assert.equal((await client.health()).status, "SERVING");
    const caps = await client.capabilities();
    assert.ok(caps.snapshots && caps.rollback && caps.fork && caps.files && caps.processes);
    assert.ok(["none", "gvisor", "runc"].includes(caps.isolation));
  });

  it("creates a session with options, lists and attaches to it", async () => {
    const id = `ts-${process.pid}-opts`;
    const sb = await client.create({ id, env: { GREETING: "hej" }, labels: { owner: "ts" } });
    made.push(sb);
    assert.equal(sb.id, id);
    assert.equal((await sb.info()).state, "active");
    assert.ok((await client.listSessions()).some((s) => s.id === id));
    const again = await client.attach(id);
    assert.equal((await again.exec("printf %s \"$GREETING\"")).output, "hej");
  });
});

describe("transport", { skip }, () => {
  it("speaks HTTP/2 (h2c) as well as HTTP/1.1, streams included", async () => {
    const h2 = new TurnboxClient({ baseUrl: url, token, httpVersion: "2" });
    const sb = await h2.create();
    made.push(sb);
    const chunks: string[] = [];
    const r = await sb.exec("echo over-h2", { onOutput: (c) => chunks.push(c.text) });
    assert.equal(r.output, "over-h2\n");
    assert.deepEqual(chunks, ["over-h2\n"]);
  });
});

describe("exec", { skip }, () => {
  let sb: Sandbox;
  before(async () => {
    sb = await session();
  });

  it("streams output to a callback and returns the result", async () => {
    const chunks: string[] = [];
    const r = await sb.exec("echo out; echo err >&2; exit 3", { onOutput: (c) => chunks.push(`${c.stream}:${c.text}`) });
    assert.equal(r.exitCode, 3);
    assert.ok(r.isError);
    assert.deepEqual(chunks.sort(), ["stderr:err\n", "stdout:out\n"]);
    assert.match(r.output, /out\n/);
    assert.ok(r.durationMs > 0);
  });

  it("yields output before the command ends (async iterator)", async () => {
    const events: { ev: ToolEvent; at: number }[] = [];
    const t0 = Date.now();
    for await (const ev of sb.execStream("echo first; sleep 0.5; echo second")) events.push({ ev, at: Date.now() - t0 });
    const first = events.find((e) => e.ev.type === "output" && e.ev.text.includes("first"));
    const last = events.at(-1)!;
    assert.ok(first, "no output event for 'first'");
    assert.equal(last.ev.type, "result");
    assert.ok(last.at - first.at >= 300, `'first' came ${last.at - first.at} ms before the end: not streamed`);
  });

  it("keeps a UTF-8 character split between chunks whole", async () => {
    const chunks: string[] = [];
    const r = await sb.exec("printf '\\303'; sleep 0.3; printf '\\251\\n'", { onOutput: (c) => chunks.push(c.text) });
    assert.equal(r.output, "\u00e9\n");
    assert.equal(chunks.join(""), "\u00e9\n", `chunks ${JSON.stringify(chunks)}`);
  });

  it("reports a timeout", async () => {
    const r = await sb.exec("echo start; sleep 10", { timeoutMs: 300 });
    assert.ok(r.timedOut);
    assert.match(r.output, /start/);
  });

  it("runs other tools with JSON input, idempotently by tool call id", async () => {
    await sb.tool("write_file", { path: "notes/a.txt", content: "one\n" });
    assert.match((await sb.tool("read_file", { path: "notes/a.txt" })).output, /one/);
    const id = `dup-${process.pid}`;
    await sb.exec("echo x >> count.txt", { toolCallId: id });
    await sb.exec("echo x >> count.txt", { toolCallId: id });
    assert.equal((await sb.exec("wc -l < count.txt")).output.trim(), "1");
  });

  it("rejects an unknown tool and input that is not an object", async () => {
    await assert.rejects(sb.tool("no_such_tool", {}), TurnboxError);
    assert.throws(() => encodeToolInput([] as unknown as Record<string, unknown>), TypeError);
  });
});

describe("files", { skip }, () => {
  let sb: Sandbox;
  before(async () => {
    sb = await session();
  });

  it("uploads and downloads binary data byte for byte", async () => {
    const data = new Uint8Array(70_000).map((_, i) => (i * 7) % 256);
    const info = await sb.upload("bin/data", data, { mode: 0o640 });
    assert.equal(info.size, data.length);
    assert.equal(info.mode & 0o777, 0o640);
    const got = await sb.download("bin/data");
    assert.deepEqual(got.data, data);
    assert.equal((await sb.exec("wc -c < bin/data")).output.trim(), String(data.length));
  });

  it("stats, lists, makes, moves and removes", async () => {
    await sb.mkdir("d/e", true);
    await sb.upload("d/e/f.txt", "hi");
    assert.equal((await sb.stat("d")).type, "dir");
    assert.deepEqual((await sb.list("d", 2)).map((f) => f.path), ["d/e", "d/e/f.txt"]);
    await sb.move("d/e/f.txt", "d/g.txt");
    assert.equal((await sb.stat("d/g.txt")).size, 2);
    await sb.remove("d", true);
    await assert.rejects(sb.stat("d"), FileNotFoundError);
  });

  it("maps missing files and escapes to typed errors", async () => {
    await assert.rejects(sb.download("missing.txt"), FileNotFoundError);
    // Paths resolve beneath the session's root: the workspace alone on a
    // host without a writable root (none), where ../ leaves it.
    if (!(await client.capabilities()).writableRoot) {
      await assert.rejects(sb.upload("../../../etc/x", "no"), PathEscapesError);
    }
  });
});

describe("snapshots", { skip }, () => {
  it("turnComplete, snapshot, list, rollback, delete, fork", async () => {
    const sb = await session();
    await sb.upload("f.txt", "v1");
    const t1 = await sb.turnComplete("turn one");
    assert.equal(t1.turn, 1);
    await sb.upload("f.txt", "v2");
    const named = await sb.snapshot("named");
    assert.equal(named.name, "named");
    assert.deepEqual((await sb.listSnapshots()).map((s) => s.id), [t1.id, named.id]);

    await sb.rollback(t1.id);
    assert.equal((await sb.exec("cat f.txt")).output, "v1");
    assert.equal((await sb.listSnapshots()).length, 2, "rollback kept the newer snapshot");

    const fork = await sb.fork(named.id);
    made.push(fork);
    assert.notEqual(fork.id, sb.id);
    assert.equal((await fork.info()).parentSnapshot, named.id);
    assert.equal((await fork.exec("cat f.txt")).output, "v2");

    await sb.deleteSnapshot(named.id);
    assert.deepEqual((await sb.listSnapshots()).map((s) => s.id), [t1.id]);
    await assert.rejects(sb.rollback(named.id), SnapshotNotFoundError);
    assert.equal((await fork.exec("cat f.txt")).output, "v2", "the fork outlives its snapshot");
  });
});

describe("lifecycle and errors", { skip }, () => {
  it("pauses, refuses calls while paused, resumes", async () => {
    const sb = await session();
    await sb.pause();
    assert.equal(await sb.state(), "paused");
    await assert.rejects(sb.exec("true"), NotActiveError);
    await sb.resume();
    assert.equal((await sb.exec("echo back")).output, "back\n");
    if (!(await client.capabilities()).memorySnapshots) {
      await assert.rejects(sb.hibernate(), (e: TurnboxError) => e.has("CAPABILITY_NOT_SUPPORTED"));
    }
  });

  it("destroys; later calls are SessionNotFoundError", async () => {
    const sb = await client.create();
    await sb.destroy();
    await assert.rejects(sb.info(), SessionNotFoundError);
    await assert.rejects(sb.exec("true"), SessionNotFoundError);
    await assert.rejects(sb.download("f"), SessionNotFoundError);
  });

  it("maps an unknown session, a bad id, a bad token and no server", async () => {
    await assert.rejects(client.attach("no-such-session"), (e: TurnboxError) => e instanceof SessionNotFoundError && e.has("SESSION_NOT_FOUND"));
    await assert.rejects(client.create({ id: "bad id!" }), InvalidArgumentError);
    const wrong = new TurnboxClient({ baseUrl: url, token: "wrong-token" });
    await assert.rejects(wrong.listSessions(), UnauthenticatedError);
    const none = new TurnboxClient({ baseUrl: "http://127.0.0.1:9", timeoutMs: 5000 });
    await assert.rejects(none.health(), UnavailableError);
  });
});

describe("ports", { skip }, () => {
  it("publishes, lists, reports and unpublishes ports", async () => {
    const sb = await session();
    assert.deepEqual(await sb.publishPort(8080, { public: true }), { port: 8080, public: true });
    await sb.publishPort(3000);
    assert.deepEqual(await sb.listPorts(), [
      { port: 3000, public: false },
      { port: 8080, public: true },
    ]);
    assert.deepEqual((await sb.info()).ports.map((p) => p.port), [3000, 8080]);
    assert.ok(sb.portUrl(3000).endsWith(`/ports/${sb.id}/3000/`));
    await sb.unpublishPort(3000);
    await assert.rejects(sb.unpublishPort(3000), (e: TurnboxError) => e.has("PORT_NOT_PUBLISHED"));
    await assert.rejects(sb.publishPort(70000), InvalidArgumentError);
  });
});

describe("processes", { skip }, () => {
  it("starts, feeds, attaches to, waits for and signals processes", async () => {
    const sb = await session();
    const p = await sb.start("cat; echo eof", { stdin: true, tag: "reader" });
    assert.ok(p.pid > 0);
    assert.ok((await sb.listProcesses()).some((q) => q.pid === p.pid && q.tag === "reader"));
    await sb.sendInput(p.pid, "hello\n");
    await sb.closeInput(p.pid);
    let out = "";
    let exit;
    for await (const ev of sb.attachProcess(p.pid)) {
      if (ev.type === "output") out += new TextDecoder().decode(ev.data);
      if (ev.type === "exit") exit = ev.exit;
    }
    assert.equal(out, "hello\neof\n", "cat ends only once input is closed");
    assert.equal(exit?.code, 0);
    assert.equal((await sb.wait(p.pid)).code, 0);

    const sleeper = await sb.start(["sleep", "30"]);
    await sb.signal(sleeper.pid, 9);
    assert.equal((await sb.wait(sleeper.pid)).signal, 9);
    await assert.rejects(sb.wait(999_999), ProcessNotFoundError);
  });
});

// fencedTs returns the first ```ts block of a Markdown file (from dist/test).
async function fencedTs(md: string): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(new URL(md, import.meta.url), "utf8");
  const block = text.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert.ok(block, `${md} has no \`\`\`ts block`);
  return block;
}

// exampleSource returns an example's source as a user would import it.
async function exampleSource(name: string): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  const src = await readFile(new URL(`../../src/examples/${name}`, import.meta.url), "utf8");
  return src.replace('"../index.js"', '"@turnbox/client"');
}

describe("docs", () => {
  it("README.md shows the example that test-clients.sh runs", async () => {
    assert.ok((await exampleSource("quickstart.ts")).includes(await fencedTs("../../README.md")), "README.md's example differs from src/examples/quickstart.ts");
  });

  it("docs/getting-started.md shows code that compiles", async () => {
    const block = (await fencedTs("../../../../docs/getting-started.md")).split("\n").filter((l) => !l.startsWith("import ") && l !== "");
    const src = await exampleSource("getting-started.ts");
    for (const line of block) assert.ok(src.includes(line), `docs/getting-started.md: ${line} is not in src/examples/getting-started.ts`);
  });
});
