/**
 * Middleware that lets through only requests with a bearer JWT the sidecar
 * verifies. It has the `(req, res, next)` shape of Express and Connect, and
 * works with a plain `node:http` server too:
 *
 *     const guard = jwtMiddleware(client, "jwt", { audience: "api" });
 *     http.createServer((req, res) => guard(req, res, () => handler(req, res)));
 *
 * The claims land in `req.lockstepClaims`. A missing or invalid token is a
 * 401 with `WWW-Authenticate`; a sidecar that cannot answer, a 503.
 */

import type { IncomingMessage, ServerResponse } from "node:http";

import type { Client } from "./client.js";
import { LockstepError, SidecarUnreachable, Unavailable, VerificationFailed } from "./errors.js";

/**
 * The longest token the sidecar verifies; a longer one is refused here, not
 * sent (past the sidecar's body limit it would be an error of the request).
 */
const MAX_TOKEN_BYTES = 16 * 1024;

export interface VerifiedRequest extends IncomingMessage {
  lockstepClaims?: Record<string, unknown>;
}

export function jwtMiddleware(
  client: Client,
  keyring: string,
  options: { audience?: string; issuer?: string; ignoreAudience?: boolean } = {},
): (req: VerifiedRequest, res: ServerResponse, next: (err?: unknown) => void) => void {
  return (req, res, next) => {
    const [scheme, ...rest] = (req.headers.authorization ?? "").split(" ");
    const token = rest.join(" ").trim();
    if (scheme.toLowerCase() !== "bearer" || !token) {
      deny(res, 401, "token_missing", "a bearer token is required");
      return;
    }
    if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) {
      deny(res, 401, "token_malformed", "the token is longer than 16 KiB");
      return;
    }
    client.jwtVerify(keyring, token, options).then(
      (verified) => {
        req.lockstepClaims = verified.claims;
        next();
      },
      (e: unknown) => {
        if (e instanceof VerificationFailed) deny(res, 401, e.code, e.message);
        else if (e instanceof Unavailable || e instanceof SidecarUnreachable) deny(res, 503, e.code, "token verification is unavailable");
        else deny(res, 500, e instanceof LockstepError ? e.code : "verification_error", "token verification failed");
      },
    );
  };
}

function deny(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  const headers: Record<string, string> = { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(body)) };
  if (status === 401) headers["WWW-Authenticate"] = `Bearer error="invalid_token", error_description="${code}"`;
  res.writeHead(status, headers).end(body);
}
