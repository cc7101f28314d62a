// The snippet in docs/getting-started.md, type-checked by tsc (not run:
// scripts/test-clients.sh runs quickstart.ts). The readme test checks that
// the doc shows this code.

import { TurnboxClient } from "../index.js";

export async function gettingStarted(): Promise<void> {
const client = new TurnboxClient({ baseUrl: "http://127.0.0.1:7420", token: "my-secret-token" });
const sandbox = await client.create();
await sandbox.exec("make test", { onOutput: (c) => process.stdout.write(c.text) });
const turn = await sandbox.turnComplete("turn 1");
await sandbox.rollback(turn.id);
await sandbox.destroy();
}
