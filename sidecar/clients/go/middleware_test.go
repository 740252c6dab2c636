package lockstep

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func hello() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := Claims(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]any{"hello": claims["sub"]})
	})
}

func get(t *testing.T, h http.Handler, authorization string) (int, http.Header, map[string]any) {
	t.Helper()
	req := httptest.NewRequest("GET", "/", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return rec.Code, rec.Header(), body
}

func TestMiddlewarePassesAValidTokenWithItsClaims(t *testing.T) {
	c := New(env(t, "LOCKSTEP_SOCKET"))
	signed, err := c.JWTSign(context.Background(), "jwt", map[string]any{"sub": "alice", "aud": "api"}, 60)
	if err != nil {
		t.Fatal(err)
	}
	status, _, body := get(t, Middleware(c, "jwt", VerifyOptions{Audience: "api"})(hello()), "Bearer "+signed.Token)
	if status != 200 || body["hello"] != "alice" {
		t.Fatalf("%d %v", status, body)
	}
}

func TestMiddlewareRefusesMissingAndInvalidTokens(t *testing.T) {
	c := New(env(t, "LOCKSTEP_SOCKET"))
	h := Middleware(c, "jwt", VerifyOptions{Audience: "api"})(hello())
	status, header, body := get(t, h, "")
	if status != 401 || body["error"].(map[string]any)["code"] != "token_missing" || header.Get("WWW-Authenticate") == "" {
		t.Fatalf("%d %v %v", status, header, body)
	}
	other, err := c.JWTSign(context.Background(), "jwt", map[string]any{"sub": "mallory", "aud": "elsewhere"}, 60)
	if err != nil {
		t.Fatal(err)
	}
	status, _, body = get(t, h, "Bearer "+other.Token)
	if status != 401 || body["error"].(map[string]any)["code"] != "token_audience" {
		t.Fatalf("%d %v", status, body)
	}
	// Longer than the sidecar takes in a request body: refused as a token.
	status, _, body = get(t, h, "Bearer "+strings.Repeat("a", 70_000))
	if status != 401 || body["error"].(map[string]any)["code"] != "token_malformed" {
		t.Fatalf("%d %v", status, body)
	}
}

func TestMiddlewareAnswers503WhenTheSidecarIsAway(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "gone.sock"))
	status, _, body := get(t, Middleware(c, "jwt", VerifyOptions{})(hello()), "Bearer a.b.c")
	if status != 503 || body["error"].(map[string]any)["code"] != "socket_unreachable" {
		t.Fatalf("%d %v", status, body)
	}
}
