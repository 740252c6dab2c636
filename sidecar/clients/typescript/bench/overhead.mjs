// Per-call cost of the client over the raw socket request, side by side:
// batches of the client's call and of the same HTTP exchange written by
// hand on a kept-alive Unix socket alternate for --secs seconds; one JSON
// line per call with the medians of the batches' per-call times, in
// microseconds. Run by `make bench-clients` (tests/benches/clients.rs).

import * as net from "node:net";
import { parseArgs } from "node:util";

import { Client } from "../dist/index.js";

const { values } = parseArgs({ options: { secs: { type: "string", default: "3" }, batch: { type: "string", default: "200" } } });
const secs = Number(values.secs);
const batch = Number(values.batch);

class Raw {
  constructor(path) {
    this.socket = net.connect(path);
    this.buf = Buffer.alloc(0);
    this.waiting = null;
    this.socket.on("data", (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      this.check();
    });
  }
  ready() {
    return new Promise((resolve) => this.socket.once("connect", resolve));
  }
  check() {
    if (!this.waiting) return;
    const end = this.buf.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString();
    const length = Number(/content-length:\s*(\d+)/i.exec(head)[1]);
    if (this.buf.length < end + 4 + length) return;
    const body = this.buf.subarray(end + 4, end + 4 + length);
    this.buf = this.buf.subarray(end + 4 + length);
    const resolve = this.waiting;
    this.waiting = null;
    resolve(body);
  }
  call(request) {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(request);
    });
  }
}

function request(method, path, body) {
  const payload = body === undefined ? "" : JSON.stringify(body);
  let head = `${method} ${path} HTTP/1.1\r\nHost: sidecar\r\nX-Lockstep-Request: 1\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n`;
  if (body !== undefined) head += "Content-Type: application/json\r\n";
  return head + "\r\n" + payload;
}

async function measure(fn) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < batch; i++) await fn();
  return Number(process.hrtime.bigint() - started) / 1000 / batch;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const client = new Client({ socket: process.env.LOCKSTEP_SOCKET });
const raw = new Raw(client.socket);
await raw.ready();
const { token } = await client.jwtSign("jwt", { sub: "bench" }, { ttl: 600 });
const calls = {
  keys: [() => client.keys("jwt"), request("GET", "/v1/keys/jwt")],
  jwt_verify: [() => client.jwtVerify("jwt", token), request("POST", "/v1/jwt/jwt/verify", { token })],
  mac: [() => client.mac("hooks", Buffer.alloc(64, "x")), request("POST", "/v1/mac/hooks", { data: Buffer.alloc(64, "x").toString("base64") })],
};
for (const [name, [call, wire]] of Object.entries(calls)) {
  if ((await raw.call(wire)).includes('"error"')) throw new Error(`raw ${name} failed`);
  const mine = [];
  const theirs = [];
  const deadline = Date.now() + secs * 1000;
  while (Date.now() < deadline) {
    mine.push(await measure(call));
    theirs.push(await measure(() => raw.call(wire)));
  }
  console.log(JSON.stringify({ language: "typescript", call: name, client_us: median(mine), raw_us: median(theirs), batches: mine.length }));
}
raw.socket.destroy();
client.close();
