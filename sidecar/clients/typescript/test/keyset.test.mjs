// The background KeySet against a real sidecar: a rotation observed within
// the watch's latency, the last good state kept through a restart.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, KeySet } from "../dist/index.js";
import { control, env, waitFor } from "./fixture.mjs";

async function watchRequests(client) {
  let total = 0;
  for (const line of (await client.metrics()).split("\n")) {
    if (line.startsWith("lockstep_sidecar_requests_total") && line.includes('route="watch"')) {
      total += Number(line.split(" ").pop());
    }
  }
  return total;
}

test("a rotation reaches the KeySet without polling", async () => {
  const client = new Client({ socket: env("LOCKSTEP_SOCKET") });
  const changes = [];
  const keys = new KeySet("hooks", { client, onChange: (k) => changes.push(k) });
  try {
    await keys.ready();
    const before = keys.verifying.map((v) => v.version);
    const requests = await watchRequests(client);
    await control("rotate", "hooks");
    const started = Date.now();
    await waitFor("the published version", () => keys.verifying.length > before.length, 10_000);
    assert.ok(Date.now() - started < 10_000);
    assert.deepEqual(keys.verifying.map((v) => v.version), [...before, Math.max(...before) + 1]);
    assert.equal(changes.at(-1).state, keys.current.state);
    assert.ok((await watchRequests(client)) - requests <= 4, "long-polls, not a poll per change");
    await waitFor("the new version signing", () => keys.signing?.version === Math.max(...before) + 1);
  } finally {
    await keys.close();
    client.close();
  }
});

test("the last good state survives a sidecar restart", async () => {
  const client = new Client({ socket: env("LOCKSTEP_SOCKET") });
  const keys = new KeySet("jwt", { client, backoffMinMs: 50, backoffMaxMs: 500 });
  try {
    const good = await keys.ready();
    await control("stop", "web");
    try {
      await waitFor("an error seen by the watch", () => keys.lastError !== null, 15_000);
      assert.equal(keys.current, good, "the last good answer is kept while the sidecar is away");
      assert.ok(keys.find(good.signing.kid));
    } finally {
      await control("start", "web");
    }
    await control("rotate", "jwt");
    await waitFor("the rotation after the restart", () => keys.verifying.length > good.verifying.length);
    assert.equal(keys.lastError, null, "a success clears the last error");
  } finally {
    await keys.close();
    client.close();
  }
});

test("an expired version never verifies from the last good answer", async () => {
  // No sidecar at all: the watch keeps failing, the answer stays.
  const client = new Client({ socket: "/nonexistent/lockstep-absent.sock" });
  const keys = new KeySet("hooks", { client, backoffMinMs: 50, backoffMaxMs: 200 });
  try {
    const now = Math.floor(Date.now() / 1000);
    keys.keys = {
      keyring: "hooks",
      signing: { version: 2, kid: "hooks-v2" },
      verifying: [
        { version: 1, kid: "hooks-v1", expires_at: now - 1 },
        { version: 2, kid: "hooks-v2", expires_at: null },
        { version: 3, kid: "hooks-v3", expires_at: now + 3600 },
      ],
    };
    await assert.rejects(keys.ready(100), /no keys for hooks within 100 ms/);
    assert.deepEqual(keys.verifying.map((v) => v.version), [2, 3]);
    assert.equal(keys.find("hooks-v1"), undefined);
    assert.equal(keys.find("hooks-v3")?.version, 3);
  } finally {
    await keys.close();
    client.close();
  }
});
