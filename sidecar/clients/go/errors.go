package lockstep

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Kind is what went wrong, broadly; every *Error has one, and errors.Is
// matches an error against the Err* values below:
//
//	if errors.Is(err, lockstep.ErrVerificationFailed) { ... }
//
// errors.As gives the *Error with its stable code.
type Kind string

// The kinds of error.
const (
	KindInvalidRequest     Kind = "invalid_request"
	KindNotFound           Kind = "not_found"
	KindVerificationFailed Kind = "verification_failed"
	KindForbidden          Kind = "forbidden"
	KindUnavailable        Kind = "unavailable"
	KindInternal           Kind = "internal"
	KindUnreachable        Kind = "unreachable"
)

func (k Kind) Error() string { return "lockstep: " + strings.ReplaceAll(string(k), "_", " ") }

// Targets for errors.Is.
var (
	ErrInvalidRequest     error = KindInvalidRequest
	ErrNotFound           error = KindNotFound
	ErrVerificationFailed error = KindVerificationFailed
	ErrForbidden          error = KindForbidden
	ErrUnavailable        error = KindUnavailable
	ErrInternal           error = KindInternal
	ErrUnreachable        error = KindUnreachable
)

// Error is an error answer of the socket API (or a transport failure, of
// kind KindUnreachable).
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Kind    Kind   `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("lockstep: %s: %s", e.Code, e.Message) }

// Unwrap makes errors.Is(err, ErrNotFound) and the like work.
func (e *Error) Unwrap() error { return e.Kind }

// Every code the socket API answers, by kind
// (tests/testdata/client-errors.json).
var kindOfCode = func() map[string]Kind {
	byKind := map[Kind]string{
		KindInvalidRequest: "audience_invalid batch_invalid body_incomplete body_invalid body_timeout body_too_large " +
			"claim_not_numeric field_missing format_invalid format_unsupported headers_too_large " +
			"keyring_not_signing keyring_wrong_type leeway_invalid lifetime_invalid method_not_allowed " +
			"private_invalid request_header_missing timeout_invalid timestamp_invalid token_too_large " +
			"tolerance_invalid ttl_too_long value_malformed value_not_base64 verify_only version_invalid",
		KindNotFound: "keyring_not_found route_not_found version_expired version_not_found version_revoked version_unknown",
		KindVerificationFailed: "ciphertext_invalid mac_invalid signature_invalid token_alg token_audience " +
			"token_exp_missing token_expired token_issuer token_kid_unknown token_malformed token_not_yet_valid " +
			"token_revoked token_signature webhook_header_invalid webhook_signature_invalid webhook_timestamp",
		KindForbidden:   "peer_not_allowed",
		KindUnavailable: "encryption_limit no_signing_key not_ready signing_bound_passed",
		KindInternal:    "operation_failed sign_failed",
	}
	out := map[string]Kind{}
	for kind, codes := range byKind {
		for _, code := range strings.Fields(codes) {
			out[code] = kind
		}
	}
	return out
}()

var kindOfStatus = map[int]Kind{
	400: KindInvalidRequest, 401: KindVerificationFailed, 403: KindForbidden, 404: KindNotFound,
	405: KindInvalidRequest, 408: KindInvalidRequest, 409: KindUnavailable, 413: KindInvalidRequest,
	431: KindInvalidRequest, 500: KindInternal, 503: KindUnavailable,
}

// KindOf is the kind of a code; a code this version does not know (a
// newer sidecar) takes the kind of its HTTP status.
func KindOf(code string, status int) Kind {
	if kind, ok := kindOfCode[code]; ok {
		return kind
	}
	if kind, ok := kindOfStatus[status]; ok {
		return kind
	}
	if status >= 500 {
		return KindInternal
	}
	return KindInvalidRequest
}

func errorFrom(status int, body []byte) error {
	var answer struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(body, &answer) != nil || answer.Error == nil {
		return &Error{Status: status, Code: "answer_invalid", Message: fmt.Sprintf("HTTP %d without a JSON error", status), Kind: KindUnreachable}
	}
	e := answer.Error
	e.Status = status
	e.Kind = KindOf(e.Code, status)
	return e
}
