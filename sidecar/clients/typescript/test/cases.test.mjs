// The shared request/answer cases (tests/testdata/client-cases.json).

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { Client, LockstepError } from "../dist/index.js";
import { env, readJson } from "./fixture.mjs";

const BYTES = new Set(["plaintext", "associated_data", "data", "payload", "signature"]);
const MISSING = Symbol("missing");

function lookup(value, path) {
  for (const part of path.split(".")) {
    if (Array.isArray(value) && /^\d+$/.test(part) && Number(part) < value.length) value = value[Number(part)];
    else if (value && typeof value === "object" && !Array.isArray(value) && part in value) value = value[part];
    else return MISSING;
  }
  return value;
}

// A built argument as the call takes it: bytes for a bytes argument.
const text = (s, name) => (BYTES.has(name) ? Buffer.from(s, "utf8") : s);

function resolve(arg, saved, name) {
  if (arg && typeof arg === "object" && !Array.isArray(arg)) {
    const keys = Object.keys(arg).sort().join(",");
    if (keys === "ref,segment") {
      const value = lookup(saved, arg.ref);
      assert.notEqual(value, MISSING, `no saved value ${arg.ref}`);
      return value.split(".")[arg.segment];
    }
    if (keys === "repeat,times") return text(arg.repeat.repeat(arg.times), name);
    if (keys === "now_plus") return Math.floor(Date.now() / 1000) + arg.now_plus;
    if (keys === "join") return text(arg.join.map((part) => resolve(part, saved)).join(""), name);
    if (keys === "ref") {
      const value = lookup(saved, arg.ref);
      assert.notEqual(value, MISSING, `no saved value ${arg.ref}`);
      return BYTES.has(name) ? Buffer.from(value, "base64") : value;
    }
    return Object.fromEntries(Object.entries(arg).map(([k, v]) => [k, resolve(v, saved, k)]));
  }
  if (Array.isArray(arg)) return arg.map((v) => resolve(v, saved, name));
  if (typeof arg === "string" && BYTES.has(name)) return Buffer.from(arg, "utf8");
  return arg;
}

// An answer as the wire carried it: bytes as base64.
function wire(value) {
  if (Buffer.isBuffer(value)) return value.toString("base64");
  if (Array.isArray(value)) return value.map(wire);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, wire(v)]));
  return value;
}

// The shared call names, in this client's API.
const CALLS = {
  health: (c) => c.health(),
  ready: (c) => c.ready(),
  keyrings: (c) => c.keyrings(),
  keys: (c, a) => c.keys(a.keyring, { format: a.format, private: a.private }),
  version: (c, a) => c.version(a.keyring, a.number, { format: a.format, private: a.private }),
  kid: (c, a) => c.kid(a.keyring, a.kid, { format: a.format, private: a.private }),
  watch: (c, a) => c.watch(a.keyring, { after: a.after, timeout: a.timeout }),
  jwks: (c, a) => c.jwks(a.keyring),
  jwt_sign: (c, a) => c.jwtSign(a.keyring, a.claims, { ttl: a.ttl }),
  jwt_verify: (c, a) =>
    c.jwtVerify(a.keyring, a.token, {
      audience: a.audience,
      issuer: a.issuer,
      leeway: a.leeway,
      ignoreAudience: a.ignore_audience,
    }),
  encrypt: (c, a) => c.encrypt(a.keyring, a.plaintext, a.associated_data),
  decrypt: (c, a) => c.decrypt(a.keyring, a.ciphertext, a.associated_data),
  rewrap: (c, a) => c.rewrap(a.keyring, a.ciphertext, a.associated_data),
  encrypt_batch: (c, a) => c.encryptBatch(a.keyring, a.items),
  decrypt_batch: (c, a) => c.decryptBatch(a.keyring, a.items),
  rewrap_batch: (c, a) => c.rewrapBatch(a.keyring, a.items),
  mac: (c, a) => c.mac(a.keyring, a.data),
  mac_verify: (c, a) => c.macVerify(a.keyring, a.data, a.mac),
  sign: (c, a) => c.sign(a.keyring, a.data),
  verify: (c, a) => c.verify(a.keyring, a.data, a.signature, a.kid),
  webhook_sign: (c, a) => c.webhookSign(a.keyring, a.payload, { id: a.id, timestamp: a.timestamp }),
  webhook_verify: (c, a) => c.webhookVerify(a.keyring, a.payload, a.headers, { tolerance: a.tolerance }),
};

const { cases } = readJson("LOCKSTEP_TEST_CASES");
const sign = new Client({ socket: env("LOCKSTEP_SOCKET") });
const verify = new Client({ socket: env("LOCKSTEP_TEST_VERIFY_SOCKET") });
after(() => (sign.close(), verify.close()));

test("the shared cases are there", () => assert.ok(cases.length >= 30, `${cases.length}`));

for (const c of cases) {
  test(c.name, async () => {
    const saved = {};
    for (const [index, step] of c.steps.entries()) {
      const where = `step ${index} (${step.call})`;
      if (step.wait_secs) await new Promise((done) => setTimeout(done, step.wait_secs * 1000));
      const call = CALLS[step.call];
      assert.ok(call, `no call ${step.call} in this client`);
      const client = step.pool === "verify" ? verify : sign;
      const args = resolve(step.args ?? {}, saved);
      if (step.error) {
        await assert.rejects(call(client, args), (e) => {
          assert.ok(e instanceof LockstepError, `${where}: ${e}`);
          assert.deepEqual({ code: e.code, kind: e.kind, status: e.status }, step.error, where);
          return true;
        });
        continue;
      }
      const answer = wire(await call(client, args));
      for (const [path, expected] of Object.entries(step.expect ?? {})) {
        assert.deepEqual(lookup(answer, path), resolve(expected, saved), `${where}: ${path} in ${JSON.stringify(answer)}`);
      }
      for (const path of step.present ?? []) {
        assert.notEqual(lookup(answer, path), MISSING, `${where}: ${path} missing from ${JSON.stringify(answer)}`);
      }
      if (step.save) saved[step.save] = answer;
    }
  });
}
