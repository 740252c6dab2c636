"""Errors of the sidecar's socket API, one class per kind of failure.

Every answer that is not a success carries ``{"error": {"code", "message"}}``;
:func:`error_from` turns it into the class of its code's kind, keeping the
code, message and HTTP status. A code this version does not know (a newer
sidecar) gets the kind of its HTTP status.
"""

from __future__ import annotations


class LockstepError(Exception):
    """Base of every error this client raises."""

    kind = "error"

    def __init__(self, code: str, message: str, status: int = 0):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class InvalidRequest(LockstepError):
    """The request was refused as it stands (4xx): fix the call."""

    kind = "invalid_request"


class NotFound(LockstepError):
    """No such keyring, version or route."""

    kind = "not_found"


class VerificationFailed(LockstepError):
    """A token, signature, MAC, ciphertext or webhook did not check out."""

    kind = "verification_failed"


class Forbidden(LockstepError):
    """This process is not on the sidecar's allow-list."""

    kind = "forbidden"


class Unavailable(LockstepError):
    """No usable key now (not ready, signing bound passed, limit reached); retry later."""

    kind = "unavailable"


class InternalError(LockstepError):
    """The sidecar failed."""

    kind = "internal"


class SidecarUnreachable(LockstepError):
    """The socket could not be reached, or the answer was not HTTP/JSON."""

    kind = "unreachable"


KINDS = {cls.kind: cls for cls in (InvalidRequest, NotFound, VerificationFailed, Forbidden, Unavailable, InternalError)}

# Every code the socket API answers, by kind (tests/testdata/client-errors.json).
CODES = {
    "invalid_request": (
        "audience_invalid batch_invalid body_incomplete body_invalid body_timeout body_too_large "
        "claim_not_numeric field_missing format_invalid format_unsupported headers_too_large "
        "keyring_not_signing keyring_wrong_type leeway_invalid lifetime_invalid method_not_allowed "
        "private_invalid request_header_missing timeout_invalid timestamp_invalid token_too_large "
        "tolerance_invalid ttl_too_long value_malformed value_not_base64 verify_only version_invalid"
    ),
    "not_found": "keyring_not_found route_not_found version_expired version_not_found version_revoked version_unknown",
    "verification_failed": (
        "ciphertext_invalid mac_invalid signature_invalid token_alg token_audience token_exp_missing token_expired "
        "token_issuer token_kid_unknown token_malformed token_not_yet_valid token_revoked token_signature "
        "webhook_header_invalid webhook_signature_invalid webhook_timestamp"
    ),
    "forbidden": "peer_not_allowed",
    "unavailable": "encryption_limit no_signing_key not_ready signing_bound_passed",
    "internal": "operation_failed sign_failed",
}
KIND_OF_CODE = {code: kind for kind, codes in CODES.items() for code in codes.split()}
KIND_OF_STATUS = {
    400: "invalid_request", 401: "verification_failed", 403: "forbidden", 404: "not_found", 405: "invalid_request",
    408: "invalid_request", 409: "unavailable", 413: "invalid_request", 431: "invalid_request", 500: "internal",
    503: "unavailable",
}


def error_from(status: int, body: object) -> LockstepError:
    """The error an answer with ``status`` and JSON ``body`` stands for."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return SidecarUnreachable("answer_invalid", f"HTTP {status} without a JSON error", status)
    code = str(error.get("code", "unknown"))
    message = str(error.get("message", ""))
    kind = KIND_OF_CODE.get(code) or KIND_OF_STATUS.get(status) or ("internal" if status >= 500 else "invalid_request")
    return KINDS[kind](code, message, status)
