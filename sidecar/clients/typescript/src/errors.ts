/**
 * Errors of the sidecar's socket API, one class per kind of failure. Every
 * error answer carries `{"error": {"code", "message"}}`; `errorFrom` makes
 * the class of its code's kind, keeping code, message and HTTP status. A
 * code this version does not know (a newer sidecar) gets the kind of its
 * HTTP status.
 */

export type Kind =
  | "invalid_request"
  | "not_found"
  | "verification_failed"
  | "forbidden"
  | "unavailable"
  | "internal"
  | "unreachable";

/** Base of every error this client throws. */
export class LockstepError extends Error {
  readonly kind: Kind = "internal";
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
  ) {
    super(`${code}: ${message}`);
    this.name = new.target.name;
  }
}

/** The request was refused as it stands: fix the call. */
export class InvalidRequest extends LockstepError {
  override readonly kind = "invalid_request";
}
/** No such keyring, version or route. */
export class NotFound extends LockstepError {
  override readonly kind = "not_found";
}
/** A token, signature, MAC, ciphertext or webhook did not check out. */
export class VerificationFailed extends LockstepError {
  override readonly kind = "verification_failed";
}
/** This process is not on the sidecar's allow-list. */
export class Forbidden extends LockstepError {
  override readonly kind = "forbidden";
}
/** No usable key now (not ready, signing bound passed, limit reached): retry later. */
export class Unavailable extends LockstepError {
  override readonly kind = "unavailable";
}
/** The sidecar failed. */
export class InternalError extends LockstepError {
  override readonly kind = "internal";
}
/** The socket could not be reached, or the answer was not HTTP/JSON. */
export class SidecarUnreachable extends LockstepError {
  override readonly kind = "unreachable";
}

const CLASSES = {
  invalid_request: InvalidRequest,
  not_found: NotFound,
  verification_failed: VerificationFailed,
  forbidden: Forbidden,
  unavailable: Unavailable,
  internal: InternalError,
} as const;

type AnswerKind = keyof typeof CLASSES;

/** Every code the socket API answers, by kind (tests/testdata/client-errors.json). */
const CODES_BY_KIND: Record<AnswerKind, string> = {
  invalid_request:
    "audience_invalid batch_invalid body_incomplete body_invalid body_timeout body_too_large " +
    "claim_not_numeric field_missing format_invalid format_unsupported headers_too_large " +
    "keyring_not_signing keyring_wrong_type leeway_invalid lifetime_invalid method_not_allowed " +
    "private_invalid request_header_missing timeout_invalid timestamp_invalid token_too_large " +
    "tolerance_invalid ttl_too_long value_malformed value_not_base64 verify_only version_invalid",
  not_found: "keyring_not_found route_not_found version_expired version_not_found version_revoked version_unknown",
  verification_failed:
    "ciphertext_invalid mac_invalid signature_invalid token_alg token_audience token_exp_missing token_expired " +
    "token_issuer token_kid_unknown token_malformed token_not_yet_valid token_revoked token_signature " +
    "webhook_header_invalid webhook_signature_invalid webhook_timestamp",
  forbidden: "peer_not_allowed",
  unavailable: "encryption_limit no_signing_key not_ready signing_bound_passed",
  internal: "operation_failed sign_failed",
};

export const KIND_OF_CODE: Readonly<Record<string, AnswerKind>> = Object.freeze(
  Object.fromEntries(
    (Object.entries(CODES_BY_KIND) as [AnswerKind, string][]).flatMap(([kind, codes]) =>
      codes.split(" ").map((code) => [code, kind]),
    ),
  ),
);

export const KIND_OF_STATUS: Readonly<Record<number, AnswerKind>> = Object.freeze({
  400: "invalid_request",
  401: "verification_failed",
  403: "forbidden",
  404: "not_found",
  405: "invalid_request",
  408: "invalid_request",
  409: "unavailable",
  413: "invalid_request",
  431: "invalid_request",
  500: "internal",
  503: "unavailable",
});

/** The kind of `code`, or of `status` for a code this version does not know. */
export function kindOf(code: string, status: number): AnswerKind {
  return KIND_OF_CODE[code] ?? KIND_OF_STATUS[status] ?? (status >= 500 ? "internal" : "invalid_request");
}

/** The error an answer with `status` and JSON `body` stands for. */
export function errorFrom(status: number, body: unknown): LockstepError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (!error || typeof error !== "object") {
    return new SidecarUnreachable("answer_invalid", `HTTP ${status} without a JSON error`, status);
  }
  const code = String(error.code ?? "unknown");
  return new CLASSES[kindOf(code, status)](code, String(error.message ?? ""), status);
}
