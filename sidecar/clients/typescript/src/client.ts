/**
 * The socket API, one method per call. Bytes go in as `Uint8Array` (or
 * Buffer) and come out as `Buffer` (the wire carries base64); tokens,
 * ciphertexts and MACs are strings. Connections are kept alive.
 */

import * as http from "node:http";

import { LockstepError, SidecarUnreachable, errorFrom } from "./errors.js";

export const DEFAULT_SOCKET = "/run/lockstep/sidecar.sock";

export interface ClientOptions {
  /** The socket; default `$LOCKSTEP_SOCKET`, else `/run/lockstep/sidecar.sock`. */
  socket?: string;
  /** Bound on each call, milliseconds (a watch adds its wait); default 10 000. */
  timeoutMs?: number;
}

export interface KeyVersion {
  version: number;
  kid: string;
  state: string;
  created_at: number;
  not_before: number | null;
  not_after: number | null;
  expires_at: number | null;
  material: { public_key?: string; private_key?: string; secret?: string; jwk?: Record<string, unknown> };
  keyring?: string;
  type?: string;
}

export interface Keys {
  keyring: string;
  type: string;
  alg: string | null;
  pool: string;
  revision: string;
  state: string;
  now: number;
  signing: KeyVersion | null;
  /**
   * When a sign-mode pool's sidecar stops signing if it hears nothing more
   * from the coordinator; past it `signing` is null.
   */
  sign_until: number | null;
  verifying: KeyVersion[];
  /** Set by `watch` only. */
  changed?: boolean;
}

export interface Readiness {
  ready: boolean;
  reason?: string | null;
  cache_age_seconds?: number | null;
}

export interface SignedJwt {
  token: string;
  kid: string;
  version: number;
  alg: string;
}

export interface VerifiedJwt {
  valid: true;
  claims: Record<string, unknown>;
  kid: string;
  version: number;
}

export interface Sealed {
  ciphertext: string;
  version: number;
  kid: string;
}

export interface Opened {
  plaintext: Buffer;
  version: number;
  kid: string;
}

export interface Checked {
  valid: true;
  version: number;
  kid: string;
}

export interface Mac {
  mac: string;
  version: number;
  kid: string;
}

export interface Signature {
  signature: Buffer;
  version: number;
  kid: string;
  alg: string;
}

export interface WebhookHeaders {
  "webhook-id": string;
  "webhook-timestamp": string;
  "webhook-signature": string;
}

export interface BatchItem {
  plaintext?: Uint8Array;
  ciphertext?: string;
  associated_data?: Uint8Array;
}

/** One item's result, or its error (`{"error": {"code", "message"}}`). */
export interface BatchResult {
  ciphertext?: string;
  plaintext?: Buffer;
  version?: number;
  kid?: string;
  error?: { code: string; message: string };
}

const b64 = (data: Uint8Array): string => {
  if (!(data instanceof Uint8Array)) throw new TypeError("bytes expected (a Uint8Array or Buffer)");
  return Buffer.from(data).toString("base64");
};
const seg = (s: string | number): string => encodeURIComponent(String(s));

/** The material's format and whether private keys come too (sign pools only). */
export interface KeysOptions {
  format?: "base64" | "jwk" | "pem" | string;
  private?: boolean;
}

function keysQuery(options: KeysOptions): string {
  const query = new URLSearchParams();
  if (options.format !== undefined) query.set("format", options.format);
  if (options.private) query.set("private", "true");
  return query.toString() ? `?${query}` : "";
}

function withAad(body: Record<string, unknown>, aad?: Uint8Array): Record<string, unknown> {
  if (aad !== undefined) body.associated_data = b64(aad);
  return body;
}

function opened<T extends { plaintext?: unknown }>(answer: T): T {
  return typeof answer.plaintext === "string" ? { ...answer, plaintext: Buffer.from(answer.plaintext, "base64") } : answer;
}

export class Client {
  readonly socket: string;
  readonly timeoutMs: number;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

  constructor(options: ClientOptions = {}) {
    this.socket = options.socket || process.env.LOCKSTEP_SOCKET || DEFAULT_SOCKET;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  /** One request: status and the parsed answer (JSON, or text) whatever the status. */
  raw(
    method: string,
    path: string,
    body?: unknown,
    options: { waitMs?: number; signal?: AbortSignal } = {},
  ): Promise<{ status: number; answer: unknown }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { "X-Lockstep-Request": "1" };
    if (payload) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = String(payload.length);
    }
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socket,
          path,
          method,
          headers,
          agent: this.agent,
          timeout: this.timeoutMs + (options.waitMs ?? 0),
          signal: options.signal,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", (e) => reject(new SidecarUnreachable("socket_closed", `${this.socket}: ${e.message}`)));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            if (!(res.headers["content-type"] ?? "").includes("json")) return resolve({ status, answer: text });
            try {
              resolve({ status, answer: JSON.parse(text) });
            } catch {
              reject(new SidecarUnreachable("answer_invalid", `HTTP ${status}: the answer is not JSON`, status));
            }
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.on("error", (e: NodeJS.ErrnoException) => {
        if (e.name === "AbortError") return reject(e);
        // Only a kept-alive socket the sidecar closed meanwhile is worth a
        // retry; a fresh one that fails is unreachable.
        const stale = req.reusedSocket && (e.code === "ECONNRESET" || e.code === "EPIPE");
        const code = stale ? "socket_closed" : "socket_unreachable";
        reject(new SidecarUnreachable(code, `${this.socket}: ${e.message}`));
      });
      req.end(payload);
    });
  }

  /** One call; throws the typed error of an error answer. */
  async request<T>(method: string, path: string, body?: unknown, options?: { waitMs?: number; signal?: AbortSignal }): Promise<T> {
    // A kept-alive connection the sidecar closed meanwhile fails on first
    // use, before anything was answered: one retry on a fresh connection.
    let result;
    try {
      result = await this.raw(method, path, body, options);
    } catch (e) {
      if (!(e instanceof LockstepError) || e.code !== "socket_closed") throw e;
      result = await this.raw(method, path, body, options);
    }
    if (result.status >= 400) throw errorFrom(result.status, result.answer);
    return result.answer as T;
  }

  health(): Promise<{ status: string }> {
    return this.request("GET", "/healthz");
  }

  /** `/readyz`: not being ready is an answer, not an error. */
  async ready(): Promise<Readiness> {
    const { status, answer } = await this.raw("GET", "/readyz");
    if ((status !== 200 && status !== 503) || typeof answer !== "object") throw errorFrom(status, answer);
    return answer as Readiness;
  }

  metrics(): Promise<string> {
    return this.request("GET", "/metrics");
  }

  keyrings(): Promise<{ pool: string; revision: string; keyrings: string[] }> {
    return this.request("GET", "/v1/keyrings");
  }

  keys(keyring: string, options: KeysOptions = {}): Promise<Keys> {
    return this.request("GET", `/v1/keys/${seg(keyring)}${keysQuery(options)}`);
  }

  version(keyring: string, number: number, options: KeysOptions = {}): Promise<KeyVersion> {
    return this.request("GET", `/v1/keys/${seg(keyring)}/versions/${seg(Math.trunc(number))}${keysQuery(options)}`);
  }

  kid(keyring: string, kid: string, options: KeysOptions = {}): Promise<KeyVersion> {
    return this.request("GET", `/v1/keys/${seg(keyring)}/kids/${seg(kid)}${keysQuery(options)}`);
  }

  /** The keys once their `state` differs from `after`, or after `timeout` seconds (default 30). */
  watch(keyring: string, options: { after?: string; timeout?: number; signal?: AbortSignal } = {}): Promise<Keys> {
    const query = new URLSearchParams();
    if (options.after !== undefined) query.set("after", options.after);
    // Whole seconds, at least one: timeout=0 would answer at once.
    const timeout = options.timeout === undefined ? undefined : Math.max(1, Math.trunc(options.timeout));
    if (timeout !== undefined) query.set("timeout", String(timeout));
    const suffix = query.toString() ? `?${query}` : "";
    const waitMs = (timeout ?? 30) * 1000;
    return this.request("GET", `/v1/keys/${seg(keyring)}/watch${suffix}`, undefined, { waitMs, signal: options.signal });
  }

  jwks(keyring: string): Promise<{ keys: Record<string, unknown>[] }> {
    return this.request("GET", `/v1/jwks/${seg(keyring)}`);
  }

  jwtSign(keyring: string, claims: Record<string, unknown>, options: { ttl?: number } = {}): Promise<SignedJwt> {
    const body: Record<string, unknown> = { claims };
    if (options.ttl !== undefined) body.ttl = options.ttl;
    return this.request("POST", `/v1/jwt/${seg(keyring)}/sign`, body);
  }

  /**
   * Verifies a token; an invalid one throws `VerificationFailed`. A token that
   * names audiences must name `audience`, unless `ignoreAudience` accepts any
   * (RFC 7519, 4.1.3).
   */
  jwtVerify(
    keyring: string,
    token: string,
    options: { audience?: string; issuer?: string; leeway?: number; ignoreAudience?: boolean } = {},
  ): Promise<VerifiedJwt> {
    const { audience, issuer, leeway, ignoreAudience } = options;
    const body = { token, audience, issuer, leeway, ignore_audience: ignoreAudience || undefined };
    return this.request("POST", `/v1/jwt/${seg(keyring)}/verify`, body);
  }

  encrypt(keyring: string, plaintext: Uint8Array, associatedData?: Uint8Array): Promise<Sealed> {
    return this.request("POST", `/v1/encrypt/${seg(keyring)}`, withAad({ plaintext: b64(plaintext) }, associatedData));
  }

  async decrypt(keyring: string, ciphertext: string, associatedData?: Uint8Array): Promise<Opened> {
    const answer = await this.request<Opened>("POST", `/v1/decrypt/${seg(keyring)}`, withAad({ ciphertext }, associatedData));
    return opened(answer);
  }

  rewrap(keyring: string, ciphertext: string, associatedData?: Uint8Array): Promise<Sealed> {
    return this.request("POST", `/v1/rewrap/${seg(keyring)}`, withAad({ ciphertext }, associatedData));
  }

  private async batch(op: string, keyring: string, items: BatchItem[]): Promise<BatchResult[]> {
    const batch = items.map((item) =>
      withAad(item.plaintext !== undefined ? { plaintext: b64(item.plaintext) } : { ciphertext: item.ciphertext }, item.associated_data),
    );
    const answer = await this.request<{ batch: BatchResult[] }>("POST", `/v1/${op}/${seg(keyring)}`, { batch });
    return answer.batch.map(opened);
  }

  encryptBatch(keyring: string, items: BatchItem[]): Promise<BatchResult[]> {
    return this.batch("encrypt", keyring, items);
  }

  decryptBatch(keyring: string, items: BatchItem[]): Promise<BatchResult[]> {
    return this.batch("decrypt", keyring, items);
  }

  rewrapBatch(keyring: string, items: BatchItem[]): Promise<BatchResult[]> {
    return this.batch("rewrap", keyring, items);
  }

  mac(keyring: string, data: Uint8Array): Promise<Mac> {
    return this.request("POST", `/v1/mac/${seg(keyring)}`, { data: b64(data) });
  }

  macVerify(keyring: string, data: Uint8Array, mac: string): Promise<Checked> {
    return this.request("POST", `/v1/mac/${seg(keyring)}/verify`, { data: b64(data), mac });
  }

  async sign(keyring: string, data: Uint8Array): Promise<Signature> {
    const answer = await this.request<{ signature: string } & Omit<Signature, "signature">>(
      "POST",
      `/v1/sign/${seg(keyring)}`,
      { data: b64(data) },
    );
    return { ...answer, signature: Buffer.from(answer.signature, "base64") };
  }

  verify(keyring: string, data: Uint8Array, signature: Uint8Array, kid?: string): Promise<Checked> {
    const body: Record<string, unknown> = { data: b64(data), signature: b64(signature) };
    if (kid !== undefined) body.kid = kid;
    return this.request("POST", `/v1/sign/${seg(keyring)}/verify`, body);
  }

  webhookSign(keyring: string, payload: Uint8Array, options: { id?: string; timestamp?: number } = {}): Promise<WebhookHeaders> {
    return this.request("POST", `/v1/webhook/${seg(keyring)}/sign`, { payload: b64(payload), ...options });
  }

  /** Checks an incoming webhook; `headers` may hold others too (only the three are sent). */
  webhookVerify(
    keyring: string,
    payload: Uint8Array,
    headers: Record<string, string | string[] | undefined>,
    options: { tolerance?: number } = {},
  ): Promise<Checked> {
    const wanted = new Set(["webhook-id", "webhook-timestamp", "webhook-signature"]);
    const sent = Object.fromEntries(
      Object.entries(headers)
        .filter(([k, v]) => wanted.has(k.toLowerCase()) && v !== undefined)
        .map(([k, v]) => [k, Array.isArray(v) ? v.join(" ") : String(v)]),
    );
    return this.request("POST", `/v1/webhook/${seg(keyring)}/verify`, { payload: b64(payload), headers: sent, ...options });
  }
}
