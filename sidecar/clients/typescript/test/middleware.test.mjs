// The middleware in a real node:http server, with the real sidecar verifying.

import assert from "node:assert/strict";
import * as http from "node:http";
import { after, before, test } from "node:test";

import { Client, jwtMiddleware } from "../dist/index.js";
import { env } from "./fixture.mjs";

const client = new Client({ socket: env("LOCKSTEP_SOCKET") });
const guard = jwtMiddleware(client, "jwt", { audience: "api" });
const server = http.createServer((req, res) =>
  guard(req, res, () => res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ hello: req.lockstepClaims.sub }))),
);
let base;
before(() => new Promise((resolve) => server.listen(0, "127.0.0.1", () => ((base = `http://127.0.0.1:${server.address().port}`), resolve()))));
after(() => (server.close(), client.close()));

async function get(authorization) {
  const response = await fetch(base, { headers: authorization ? { authorization } : {} });
  return { status: response.status, headers: response.headers, body: await response.json() };
}

test("a valid token passes with its claims", async () => {
  const { token } = await client.jwtSign("jwt", { sub: "alice", aud: "api" }, { ttl: 60 });
  const { status, body } = await get(`Bearer ${token}`);
  assert.deepEqual({ status, body }, { status: 200, body: { hello: "alice" } });
});

test("missing and invalid tokens are 401", async () => {
  const missing = await get();
  assert.equal(missing.status, 401);
  assert.equal(missing.body.error.code, "token_missing");
  assert.match(missing.headers.get("www-authenticate"), /^Bearer/);
  const { token } = await client.jwtSign("jwt", { sub: "mallory", aud: "elsewhere" }, { ttl: 60 });
  const other = await get(`Bearer ${token}`);
  assert.deepEqual([other.status, other.body.error.code], [401, "token_audience"]);
});

// A stand-in response: node's own server refuses headers this long, other
// servers need not.
function call(guard, authorization) {
  return new Promise((done) => {
    const res = { writeHead(status, headers) { this.status = status; this.headers = headers; return this; }, end(body) { this.body = JSON.parse(body); done(res); } };
    guard({ headers: { authorization } }, res, () => done(res));
  });
}

test("a token with an audience needs one named or ignored", async () => {
  const { token } = await client.jwtSign("jwt", { sub: "alice", aud: "api" }, { ttl: 60 });
  const unnamed = await call(jwtMiddleware(client, "jwt"), `Bearer ${token}`);
  assert.deepEqual([unnamed.status, unnamed.body.error.code], [401, "token_audience"]);
  const req = { headers: { authorization: `Bearer ${token}` } };
  await new Promise((done, fail) => jwtMiddleware(client, "jwt", { ignoreAudience: true })(req, { writeHead: fail }, done));
  assert.equal(req.lockstepClaims.sub, "alice");
});

test("a token longer than the sidecar takes is a 401, not sent", async () => {
  const res = await call(guard, `Bearer ${"a".repeat(70_000)}`);
  assert.deepEqual([res.status, res.body.error.code], [401, "token_malformed"]);
});

test("an unreachable sidecar is 503", async () => {
  const away = jwtMiddleware(new Client({ socket: "/nonexistent/lockstep.sock" }), "jwt");
  const res = { writeHead(status, headers) { this.status = status; this.headers = headers; return this; }, end(body) { this.body = JSON.parse(body); this.done(); } };
  await new Promise((done) => { res.done = done; away({ headers: { authorization: "Bearer a.b.c" } }, res, () => done()); });
  assert.deepEqual([res.status, res.body.error.code], [503, "socket_unreachable"]);
});
