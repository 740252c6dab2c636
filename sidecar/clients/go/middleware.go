package lockstep

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

type claimsKey struct{}

// maxTokenBytes is the longest token the sidecar verifies; a longer one is
// refused here, not sent (past the sidecar's body limit it would be an
// error of the request, not of the token).
const maxTokenBytes = 16 * 1024

// Claims are the verified claims Middleware put in the request's context.
func Claims(ctx context.Context) (map[string]any, bool) {
	claims, ok := ctx.Value(claimsKey{}).(map[string]any)
	return claims, ok
}

// Middleware lets through only requests with a bearer JWT the sidecar
// verifies with keyring (and opts); the claims are in the request's
// context (Claims). A missing or invalid token is a 401 with
// WWW-Authenticate; a sidecar that cannot answer, a 503.
func Middleware(c *Client, keyring string, opts VerifyOptions) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			token = strings.TrimSpace(token)
			if !strings.EqualFold(scheme, "bearer") || token == "" {
				deny(w, http.StatusUnauthorized, "token_missing", "a bearer token is required")
				return
			}
			if len(token) > maxTokenBytes {
				deny(w, http.StatusUnauthorized, "token_malformed", "the token is longer than 16 KiB")
				return
			}
			verified, err := c.JWTVerify(r.Context(), keyring, token, opts)
			var e *Error
			switch {
			case err == nil:
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, verified.Claims)))
			case errors.Is(err, ErrVerificationFailed) && errors.As(err, &e):
				deny(w, http.StatusUnauthorized, e.Code, e.Message)
			case errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnreachable):
				code := "unavailable"
				if errors.As(err, &e) {
					code = e.Code
				}
				deny(w, http.StatusServiceUnavailable, code, "token verification is unavailable")
			default:
				code := "verification_error"
				if errors.As(err, &e) {
					code = e.Code
				}
				deny(w, http.StatusInternalServerError, code, "token verification failed")
			}
		})
	}
}

func deny(w http.ResponseWriter, status int, code, message string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="`+code+`"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": message}})
}
