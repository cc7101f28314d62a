// The README's example, compiled and run by scripts/test-clients.sh.
// Run it with `node dist/examples/quickstart.js` after `npm run build`,
// with TURNBOX_URL (default http://127.0.0.1:7420) and TURNBOX_TOKEN set.

import { SessionNotFoundError, TurnboxClient } from "../index.js";

const client = new TurnboxClient({
  baseUrl: process.env.TURNBOX_URL ?? "http://127.0.0.1:7420",
  token: process.env.TURNBOX_TOKEN,
});

const sandbox = await client.create();
console.log(`session ${sandbox.id}`);

// Output streams to the callback while the command runs.
const result = await sandbox.exec("echo v1 > state.txt; for i in 1 2 3; do echo tick $i; sleep 0.1; done", {
  onOutput: (chunk) => process.stdout.write(`[${chunk.stream}] ${chunk.text}`),
});
console.log(`exit ${result.exitCode} in ${result.durationMs.toFixed(0)} ms`);

// One snapshot per agent turn; roll back to any of them.
const turn1 = await sandbox.turnComplete("turn 1");
await sandbox.upload("state.txt", "v2\n");
await sandbox.rollback(turn1.id);
const { data } = await sandbox.download("state.txt");
console.log(`after rollback: ${new TextDecoder().decode(data).trim()}`); // v1

// Or as an async iterator.
for await (const ev of sandbox.execStream("ls -l")) {
  if (ev.type === "output") process.stdout.write(ev.text);
  else console.log(`ls exited ${ev.result.exitCode}`);
}

// A fork starts from a snapshot and lives on its own.
const fork = await sandbox.fork(turn1.id);
console.log(`fork ${fork.id}: ${(await fork.exec("cat state.txt")).output.trim()}`);

await fork.destroy();
await sandbox.destroy();
try {
  await sandbox.exec("true");
} catch (err) {
  if (!(err instanceof SessionNotFoundError)) throw err;
  console.log(`destroyed: ${err.message}`);
}
