/**
 * A keyring's keys kept current by one background loop waiting on the
 * watch long-poll: reads never touch the socket, and through errors and
 * sidecar restarts the last good answer stays, with jittered exponential
 * retry.
 */

import { EventEmitter } from "node:events";

import { Client, type KeyVersion, type Keys } from "./client.js";
import type { LockstepError } from "./errors.js";

export interface KeySetOptions {
  client?: Client;
  /** Called after each change, the first answer included (also the "change" event). */
  onChange?: (keys: Keys) => void;
  /** Each long-poll's wait, seconds (default: the sidecar's). */
  watchTimeout?: number;
  /** Retry bounds after an error, milliseconds (defaults 200 and 10 000). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

export class KeySet extends EventEmitter {
  readonly keyring: string;
  private readonly client: Client;
  private readonly options: KeySetOptions;
  private readonly abort = new AbortController();
  private keys: Keys | null = null;
  private readyPromise: Promise<Keys>;
  private markReady!: (keys: Keys) => void;
  private loop: Promise<void>;
  /** The most recent error of the watch (null after a success). */
  lastError: LockstepError | Error | null = null;
  /** Answers taken in. */
  changes = 0;

  constructor(keyring: string, options: KeySetOptions = {}) {
    super();
    this.keyring = keyring;
    this.options = options;
    // Its own client: the long-poll holds a connection for its whole wait.
    const base = options.client ?? new Client();
    this.client = new Client({ socket: base.socket, timeoutMs: base.timeoutMs });
    this.readyPromise = new Promise((resolve) => (this.markReady = resolve));
    this.loop = this.run();
  }

  /** The last good answer (null until the first). */
  get current(): Keys | null {
    return this.keys;
  }

  get signing(): KeyVersion | null {
    return this.keys?.signing ?? null;
  }

  /**
   * The verification set, less any version whose `expires_at` has passed by
   * this machine's clock: the last good answer is kept through a sidecar
   * outage, but an expired key never verifies from it.
   */
  get verifying(): KeyVersion[] {
    const now = Date.now() / 1000;
    return (this.keys?.verifying ?? []).filter((v) => v.expires_at === null || v.expires_at > now);
  }

  /** The version of the verification set with this key id. */
  find(kid: string): KeyVersion | undefined {
    return this.verifying.find((v) => v.kid === kid);
  }

  /** Resolves with the first answer; rejects after `timeoutMs` if one is given and none came. */
  ready(timeoutMs?: number): Promise<Keys> {
    if (timeoutMs === undefined) return this.readyPromise;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`lockstep: no keys for ${this.keyring} within ${timeoutMs} ms`)), timeoutMs);
    });
    return Promise.race([this.readyPromise, late]).finally(() => clearTimeout(timer));
  }

  /** Stops the loop. */
  async close(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.client.close();
  }

  private async run(): Promise<void> {
    const { watchTimeout, backoffMinMs = 200, backoffMaxMs = 10_000 } = this.options;
    let state: string | undefined;
    let failures = 0;
    while (!this.abort.signal.aborted) {
      let answer: Keys;
      try {
        answer = await this.client.watch(this.keyring, { after: state, timeout: watchTimeout, signal: this.abort.signal });
      } catch (e) {
        if (this.abort.signal.aborted) return;
        this.lastError = e as Error;
        failures += 1;
        const delay = Math.min(backoffMaxMs, backoffMinMs * 2 ** Math.min(failures - 1, 16));
        await sleep(delay * (0.5 + Math.random() / 2), this.abort.signal);
        continue;
      }
      failures = 0;
      this.lastError = null;
      if (answer.state === state) continue;
      state = answer.state;
      delete answer.changed;
      this.keys = answer;
      this.changes += 1;
      this.markReady(answer);
      try {
        this.options.onChange?.(answer);
        this.emit("change", answer);
      } catch (e) {
        // The app's callback must not stop the watch.
        this.lastError = e as Error;
      }
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}
