// The fixture comes from the environment the Rust harness sets
// (tests/src/clients.rs: real server, real release sidecars); run these
// through `make test` or `cargo test -p lockstep-tests --test clients`.

import { readFileSync } from "node:fs";
import * as http from "node:http";

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run through \`cargo test -p lockstep-tests --test clients\``);
  return value;
}

export function readJson(name) {
  return JSON.parse(readFileSync(env(name), "utf8"));
}

export function control(action, target) {
  const url = new URL(`${env("LOCKSTEP_TEST_CONTROL")}/${action}/${target}`);
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent: false }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`control ${action}: ${text}`))));
    });
    req.on("error", reject);
    req.end();
  });
}

export async function waitFor(what, predicate, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
