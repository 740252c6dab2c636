// Error mapping, transport failures and packaging.

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import {
  Client,
  InvalidRequest,
  KIND_OF_CODE,
  KIND_OF_STATUS,
  NotFound,
  SidecarUnreachable,
  VERSION,
  errorFrom,
} from "../dist/index.js";
import { control, env, readJson } from "./fixture.mjs";

test("every code maps to the shared kind", () => {
  const shared = readJson("LOCKSTEP_TEST_ERRORS");
  assert.deepEqual({ ...KIND_OF_CODE }, shared.codes);
  assert.deepEqual(Object.fromEntries(Object.entries(KIND_OF_STATUS).map(([k, v]) => [String(k), v])), shared.by_status);
});

test("an unknown code takes the kind of its status", () => {
  assert.ok(errorFrom(404, { error: { code: "brand_new", message: "m" } }) instanceof NotFound);
  assert.ok(errorFrom(418, { error: { code: "brand_new", message: "m" } }) instanceof InvalidRequest);
  assert.ok(errorFrom(502, "not json") instanceof SidecarUnreachable);
});

test("an unreachable socket is a typed error", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-"));
  await assert.rejects(new Client({ socket: join(dir, "absent.sock") }).health(), (e) => {
    assert.ok(e instanceof SidecarUnreachable);
    assert.equal(e.code, "socket_unreachable");
    return true;
  });
});

test("the socket defaults to the environment", () => {
  const saved = process.env.LOCKSTEP_SOCKET;
  try {
    process.env.LOCKSTEP_SOCKET = "/tmp/elsewhere.sock";
    assert.equal(new Client().socket, "/tmp/elsewhere.sock");
    delete process.env.LOCKSTEP_SOCKET;
    assert.equal(new Client().socket, "/run/lockstep/sidecar.sock");
  } finally {
    process.env.LOCKSTEP_SOCKET = saved;
  }
});

test("bytes are required where bytes travel", async () => {
  const client = new Client({ socket: env("LOCKSTEP_SOCKET") });
  assert.throws(() => client.mac("hooks", "text, not bytes"), TypeError);
  client.close();
});

test("versioned with the project", () => {
  const cargo = readFileSync(new URL("../../../../Cargo.toml", import.meta.url), "utf8");
  const version = /^version = "([^"]+)"/m.exec(cargo)[1];
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.equal(pkg.version, version);
  assert.equal(VERSION, version);
});

test("a kept-alive client survives a sidecar restart", async () => {
  const client = new Client({ socket: env("LOCKSTEP_SOCKET") });
  assert.deepEqual(await client.health(), { status: "ok" });
  await control("restart", "web");
  assert.deepEqual(await client.health(), { status: "ok" });
  client.close();
});
