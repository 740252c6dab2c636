// Package lockstep is a client of the Lockstep sidecar's socket API: keys,
// JWTs, encryption, MACs, raw signatures and webhooks, with a KeySet kept
// current by the watch long-poll and a net/http middleware that verifies
// bearer JWTs.
//
//	c := lockstep.New("") // $LOCKSTEP_SOCKET, else /run/lockstep/sidecar.sock
//	signed, err := c.JWTSign(ctx, "jwt", map[string]any{"sub": "alice"}, 300)
//
// Bytes go in and come out as []byte (the wire carries base64); tokens,
// ciphertexts and MACs are strings. A Client is safe for concurrent use and
// keeps its connections alive.
package lockstep

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// Version of this client, the project's.
const Version = "0.1.0"

// DefaultSocket is where the sidecar listens unless LOCKSTEP_SOCKET says.
const DefaultSocket = "/run/lockstep/sidecar.sock"

// Client talks to one sidecar.
type Client struct {
	socket  string
	http    *http.Client
	timeout time.Duration
}

// New is a client of the sidecar at socket ("" for $LOCKSTEP_SOCKET, else
// DefaultSocket). Each call is bounded by 10 s (a watch adds its wait).
func New(socket string) *Client {
	if socket == "" {
		socket = os.Getenv("LOCKSTEP_SOCKET")
	}
	if socket == "" {
		socket = DefaultSocket
	}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socket, http: &http.Client{Transport: transport}, timeout: 10 * time.Second}
}

// Socket is the socket path this client uses.
func (c *Client) Socket() string { return c.socket }

// WithTimeout sets the bound on each call.
func (c *Client) WithTimeout(d time.Duration) *Client { c.timeout = d; return c }

// Raw sends one request; it answers the status and body whatever the status.
func (c *Client) Raw(ctx context.Context, method, path string, body any, wait time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout+wait)
	defer cancel()
	var reader io.Reader
	if body != nil {
		payload, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("lockstep: encoding the request: %w", err)
		}
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sidecar"+path, reader)
	if err != nil {
		return 0, nil, &Error{Code: "request_invalid", Message: err.Error(), Kind: KindInvalidRequest}
	}
	req.Header.Set("X-Lockstep-Request", "1")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, &Error{Code: "socket_unreachable", Message: fmt.Sprintf("%s: %v", c.socket, err), Kind: KindUnreachable}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, &Error{Code: "socket_closed", Message: fmt.Sprintf("%s: %v", c.socket, err), Kind: KindUnreachable}
	}
	return resp.StatusCode, data, nil
}

func (c *Client) call(ctx context.Context, method, path string, body, out any, wait time.Duration) error {
	status, data, err := c.Raw(ctx, method, path, body, wait)
	if err != nil {
		return err
	}
	if status >= 400 {
		return errorFrom(status, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Status: status, Code: "answer_invalid", Message: "the answer is not the expected JSON", Kind: KindUnreachable}
	}
	return nil
}

func seg(s string) string { return url.PathEscape(s) }

// bytesOf keeps nil from going out as JSON null: no data is empty data.
func bytesOf(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Health is GET /healthz.
func (c *Client) Health(ctx context.Context) (map[string]any, error) {
	var out map[string]any
	return out, c.call(ctx, "GET", "/healthz", nil, &out, 0)
}

// Readiness is the answer of /readyz.
type Readiness struct {
	Ready           bool     `json:"ready"`
	Reason          *string  `json:"reason"`
	CacheAgeSeconds *float64 `json:"cache_age_seconds"`
}

// Ready is GET /readyz; not being ready is an answer, not an error.
func (c *Client) Ready(ctx context.Context) (*Readiness, error) {
	status, data, err := c.Raw(ctx, "GET", "/readyz", nil, 0)
	if err != nil {
		return nil, err
	}
	var out Readiness
	if (status != 200 && status != 503) || json.Unmarshal(data, &out) != nil {
		return nil, errorFrom(status, data)
	}
	return &out, nil
}

// Metrics is GET /metrics, Prometheus text.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	status, data, err := c.Raw(ctx, "GET", "/metrics", nil, 0)
	if err != nil {
		return "", err
	}
	if status >= 400 {
		return "", errorFrom(status, data)
	}
	return string(data), nil
}

// Keyrings is the pool's keyrings.
type Keyrings struct {
	Pool     string   `json:"pool"`
	Revision string   `json:"revision"`
	Keyrings []string `json:"keyrings"`
}

// Keyrings is GET /v1/keyrings.
func (c *Client) Keyrings(ctx context.Context) (*Keyrings, error) {
	var out Keyrings
	return &out, c.call(ctx, "GET", "/v1/keyrings", nil, &out, 0)
}

// Material is a version's key in the format asked for.
type Material struct {
	PublicKey  string         `json:"public_key,omitempty"`
	PrivateKey string         `json:"private_key,omitempty"`
	Secret     string         `json:"secret,omitempty"`
	JWK        map[string]any `json:"jwk,omitempty"`
}

// KeyVersion is one version of a keyring.
type KeyVersion struct {
	Version   uint64   `json:"version"`
	Kid       string   `json:"kid"`
	State     string   `json:"state"`
	CreatedAt int64    `json:"created_at"`
	NotBefore *int64   `json:"not_before"`
	NotAfter  *int64   `json:"not_after"`
	ExpiresAt *int64   `json:"expires_at"`
	Material  Material `json:"material"`
	Keyring   string   `json:"keyring,omitempty"`
	Type      string   `json:"type,omitempty"`
}

// Keys is a keyring's signing version and verification set.
type Keys struct {
	Keyring  string      `json:"keyring"`
	Type     string      `json:"type"`
	Alg      *string     `json:"alg"`
	Pool     string      `json:"pool"`
	Revision string      `json:"revision"`
	State    string      `json:"state"`
	Now      int64       `json:"now"`
	Signing  *KeyVersion `json:"signing"`
	// SignUntil is when a sign-mode pool's sidecar stops signing if it
	// hears nothing more from the coordinator; past it Signing is nil.
	SignUntil *int64       `json:"sign_until"`
	Verifying []KeyVersion `json:"verifying"`
	// Changed is set by Watch only.
	Changed *bool `json:"changed,omitempty"`
}

// Find is the version of the verification set with this kid, or nil.
func (k *Keys) Find(kid string) *KeyVersion {
	for i := range k.Verifying {
		if k.Verifying[i].Kid == kid {
			return &k.Verifying[i]
		}
	}
	return nil
}

// KeysOptions picks the material's format ("base64", "jwk", "pem"; ""
// for the default) and whether private keys come too (sign pools only).
type KeysOptions struct {
	Format  string
	Private bool
}

func (o KeysOptions) query() string {
	q := url.Values{}
	if o.Format != "" {
		q.Set("format", o.Format)
	}
	if o.Private {
		q.Set("private", "true")
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Keys is GET /v1/keys/{keyring}.
func (c *Client) Keys(ctx context.Context, keyring string, opts KeysOptions) (*Keys, error) {
	var out Keys
	return &out, c.call(ctx, "GET", "/v1/keys/"+seg(keyring)+opts.query(), nil, &out, 0)
}

// KeyVersion is one version by number, its material as opts asks.
func (c *Client) KeyVersion(ctx context.Context, keyring string, number uint64, opts KeysOptions) (*KeyVersion, error) {
	var out KeyVersion
	path := "/v1/keys/" + seg(keyring) + "/versions/" + strconv.FormatUint(number, 10) + opts.query()
	return &out, c.call(ctx, "GET", path, nil, &out, 0)
}

// KeyByKid is one version by key id, its material as opts asks.
func (c *Client) KeyByKid(ctx context.Context, keyring, kid string, opts KeysOptions) (*KeyVersion, error) {
	var out KeyVersion
	return &out, c.call(ctx, "GET", "/v1/keys/"+seg(keyring)+"/kids/"+seg(kid)+opts.query(), nil, &out, 0)
}

// Watch answers the keys once their state differs from after ("" for at
// once), or after timeout (0 for the sidecar's default of 30 s).
func (c *Client) Watch(ctx context.Context, keyring, after string, timeout time.Duration) (*Keys, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	wait := 30 * time.Second
	if timeout > 0 {
		// Whole seconds, at least one: timeout=0 would answer at once.
		timeout = max(timeout.Truncate(time.Second), time.Second)
		q.Set("timeout", strconv.FormatInt(int64(timeout/time.Second), 10))
		wait = timeout
	}
	path := "/v1/keys/" + seg(keyring) + "/watch"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out Keys
	return &out, c.call(ctx, "GET", path, nil, &out, wait)
}

// JWKS is a JWK Set.
type JWKS struct {
	Keys []map[string]any `json:"keys"`
}

// JWKS is GET /v1/jwks/{keyring}: the verification set's public keys.
func (c *Client) JWKS(ctx context.Context, keyring string) (*JWKS, error) {
	var out JWKS
	return &out, c.call(ctx, "GET", "/v1/jwks/"+seg(keyring), nil, &out, 0)
}

// SignedJWT is a token and the version that signed it.
type SignedJWT struct {
	Token   string `json:"token"`
	Kid     string `json:"kid"`
	Version uint64 `json:"version"`
	Alg     string `json:"alg"`
}

// JWTSign signs claims; ttl (seconds, 0 for the keyring's max_token_ttl)
// sets exp.
func (c *Client) JWTSign(ctx context.Context, keyring string, claims map[string]any, ttl int64) (*SignedJWT, error) {
	body := map[string]any{"claims": claims}
	if ttl > 0 {
		body["ttl"] = ttl
	}
	var out SignedJWT
	return &out, c.call(ctx, "POST", "/v1/jwt/"+seg(keyring)+"/sign", body, &out, 0)
}

// VerifyOptions are the checks beyond signature and lifetime.
type VerifyOptions struct {
	// Audience this service is: a token that names audiences must name it,
	// unless IgnoreAudience accepts any (RFC 7519, section 4.1.3).
	Audience       string
	IgnoreAudience bool
	Issuer         string
	// Leeway on exp and nbf, seconds (nil for the sidecar's).
	Leeway *int64
}

// VerifiedJWT is a token's claims and the version that checked it.
type VerifiedJWT struct {
	Valid   bool           `json:"valid"`
	Claims  map[string]any `json:"claims"`
	Kid     string         `json:"kid"`
	Version uint64         `json:"version"`
}

// JWTVerify verifies a token; an invalid one is an error of kind
// KindVerificationFailed.
func (c *Client) JWTVerify(ctx context.Context, keyring, token string, opts VerifyOptions) (*VerifiedJWT, error) {
	body := map[string]any{"token": token}
	if opts.Audience != "" {
		body["audience"] = opts.Audience
	}
	if opts.Issuer != "" {
		body["issuer"] = opts.Issuer
	}
	if opts.Leeway != nil {
		body["leeway"] = *opts.Leeway
	}
	if opts.IgnoreAudience {
		body["ignore_audience"] = true
	}
	var out VerifiedJWT
	return &out, c.call(ctx, "POST", "/v1/jwt/"+seg(keyring)+"/verify", body, &out, 0)
}

// Sealed is a ciphertext ("lockstep:v<n>:...") and its version.
type Sealed struct {
	Ciphertext string `json:"ciphertext"`
	Version    uint64 `json:"version"`
	Kid        string `json:"kid"`
}

// Opened is a plaintext and the version that opened it.
type Opened struct {
	Plaintext []byte `json:"plaintext"`
	Version   uint64 `json:"version"`
	Kid       string `json:"kid"`
}

func item(field string, value any, aad []byte) map[string]any {
	out := map[string]any{field: value}
	if aad != nil {
		out["associated_data"] = aad
	}
	return out
}

// Encrypt seals plaintext (AES-256-GCM) with the signing version; aad may
// be nil.
func (c *Client) Encrypt(ctx context.Context, keyring string, plaintext, aad []byte) (*Sealed, error) {
	var out Sealed
	return &out, c.call(ctx, "POST", "/v1/encrypt/"+seg(keyring), item("plaintext", bytesOf(plaintext), aad), &out, 0)
}

// Decrypt opens a ciphertext with the version it names.
func (c *Client) Decrypt(ctx context.Context, keyring, ciphertext string, aad []byte) (*Opened, error) {
	var out Opened
	return &out, c.call(ctx, "POST", "/v1/decrypt/"+seg(keyring), item("ciphertext", ciphertext, aad), &out, 0)
}

// Rewrap encrypts a ciphertext again with the signing version.
func (c *Client) Rewrap(ctx context.Context, keyring, ciphertext string, aad []byte) (*Sealed, error) {
	var out Sealed
	return &out, c.call(ctx, "POST", "/v1/rewrap/"+seg(keyring), item("ciphertext", ciphertext, aad), &out, 0)
}

// BatchItem is one item of a batch: Plaintext to encrypt (empty is
// allowed), or Ciphertext to decrypt or rewrap.
type BatchItem struct {
	Plaintext      []byte `json:"plaintext,omitempty"`
	Ciphertext     string `json:"ciphertext,omitempty"`
	AssociatedData []byte `json:"associated_data,omitempty"`
}

// MarshalJSON sends plaintext whenever there is no ciphertext, even empty.
func (b BatchItem) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	if b.Ciphertext != "" {
		out["ciphertext"] = b.Ciphertext
	} else {
		out["plaintext"] = bytesOf(b.Plaintext)
	}
	if b.AssociatedData != nil {
		out["associated_data"] = b.AssociatedData
	}
	return json.Marshal(out)
}

// BatchResult is one item's result, or its Error.
type BatchResult struct {
	Ciphertext string `json:"ciphertext,omitempty"`
	Plaintext  []byte `json:"plaintext,omitempty"`
	Version    uint64 `json:"version,omitempty"`
	Kid        string `json:"kid,omitempty"`
	Error      *Error `json:"error,omitempty"`
}

func (c *Client) batch(ctx context.Context, op, keyring string, items []BatchItem) ([]BatchResult, error) {
	var out struct {
		Batch []BatchResult `json:"batch"`
	}
	if err := c.call(ctx, "POST", "/v1/"+op+"/"+seg(keyring), map[string]any{"batch": items}, &out, 0); err != nil {
		return nil, err
	}
	for i := range out.Batch {
		if e := out.Batch[i].Error; e != nil {
			e.Kind = KindOf(e.Code, 400)
		}
	}
	return out.Batch, nil
}

// EncryptBatch encrypts many items; results in order.
func (c *Client) EncryptBatch(ctx context.Context, keyring string, items []BatchItem) ([]BatchResult, error) {
	return c.batch(ctx, "encrypt", keyring, items)
}

// DecryptBatch decrypts many items; results in order.
func (c *Client) DecryptBatch(ctx context.Context, keyring string, items []BatchItem) ([]BatchResult, error) {
	return c.batch(ctx, "decrypt", keyring, items)
}

// RewrapBatch rewraps many items; results in order.
func (c *Client) RewrapBatch(ctx context.Context, keyring string, items []BatchItem) ([]BatchResult, error) {
	return c.batch(ctx, "rewrap", keyring, items)
}

// MAC is a version-tagged MAC ("lockstep:v<n>:...").
type MAC struct {
	MAC     string `json:"mac"`
	Version uint64 `json:"version"`
	Kid     string `json:"kid"`
}

// Checked is a successful check and the version that made it.
type Checked struct {
	Valid   bool   `json:"valid"`
	Version uint64 `json:"version"`
	Kid     string `json:"kid"`
}

// MAC computes HMAC-SHA-256 with the signing version.
func (c *Client) MAC(ctx context.Context, keyring string, data []byte) (*MAC, error) {
	var out MAC
	return &out, c.call(ctx, "POST", "/v1/mac/"+seg(keyring), map[string]any{"data": bytesOf(data)}, &out, 0)
}

// MACVerify checks a MAC in the sidecar (constant time).
func (c *Client) MACVerify(ctx context.Context, keyring string, data []byte, mac string) (*Checked, error) {
	var out Checked
	body := map[string]any{"data": bytesOf(data), "mac": mac}
	return &out, c.call(ctx, "POST", "/v1/mac/"+seg(keyring)+"/verify", body, &out, 0)
}

// Signature is a raw signature over bytes.
type Signature struct {
	Signature []byte `json:"signature"`
	Version   uint64 `json:"version"`
	Kid       string `json:"kid"`
	Alg       string `json:"alg"`
}

// Sign signs data with an asymmetric keyring's signing version.
func (c *Client) Sign(ctx context.Context, keyring string, data []byte) (*Signature, error) {
	var out Signature
	return &out, c.call(ctx, "POST", "/v1/sign/"+seg(keyring), map[string]any{"data": bytesOf(data)}, &out, 0)
}

// Verify checks a raw signature with the version kid names ("" for each
// version in the verification set).
func (c *Client) Verify(ctx context.Context, keyring string, data, signature []byte, kid string) (*Checked, error) {
	body := map[string]any{"data": bytesOf(data), "signature": bytesOf(signature)}
	if kid != "" {
		body["kid"] = kid
	}
	var out Checked
	return &out, c.call(ctx, "POST", "/v1/sign/"+seg(keyring)+"/verify", body, &out, 0)
}

// WebhookHeaders are the Standard Webhooks headers of a signed payload.
type WebhookHeaders struct {
	ID        string `json:"webhook-id"`
	Timestamp string `json:"webhook-timestamp"`
	Signature string `json:"webhook-signature"`
}

// Header sets the three headers on an outgoing request's header.
func (w *WebhookHeaders) Header(h http.Header) {
	h.Set("webhook-id", w.ID)
	h.Set("webhook-timestamp", w.Timestamp)
	h.Set("webhook-signature", w.Signature)
}

// WebhookSign signs payload for an external receiver: one signature per
// version the receiver may hold. id "" and timestamp 0 take a random id
// and now.
func (c *Client) WebhookSign(ctx context.Context, keyring string, payload []byte, id string, timestamp int64) (*WebhookHeaders, error) {
	body := map[string]any{"payload": bytesOf(payload)}
	if id != "" {
		body["id"] = id
	}
	if timestamp != 0 {
		body["timestamp"] = timestamp
	}
	var out WebhookHeaders
	return &out, c.call(ctx, "POST", "/v1/webhook/"+seg(keyring)+"/sign", body, &out, 0)
}

// WebhookVerify checks an incoming webhook's headers (only the three
// webhook-* headers are sent; names are case-insensitive). tolerance 0 is
// the sidecar's default of five minutes.
func (c *Client) WebhookVerify(ctx context.Context, keyring string, payload []byte, headers map[string]string, tolerance time.Duration) (*Checked, error) {
	sent := map[string]string{}
	for k, v := range headers {
		switch http.CanonicalHeaderKey(k) {
		case "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature":
			sent[k] = v
		}
	}
	body := map[string]any{"payload": bytesOf(payload), "headers": sent}
	if tolerance > 0 {
		body["tolerance"] = int64(tolerance / time.Second)
	}
	var out Checked
	return &out, c.call(ctx, "POST", "/v1/webhook/"+seg(keyring)+"/verify", body, &out, 0)
}

// WebhookVerifyRequest checks the webhook headers of an incoming request.
func (c *Client) WebhookVerifyRequest(ctx context.Context, keyring string, payload []byte, h http.Header, tolerance time.Duration) (*Checked, error) {
	return c.WebhookVerify(ctx, keyring, payload, map[string]string{
		"webhook-id": h.Get("webhook-id"), "webhook-timestamp": h.Get("webhook-timestamp"),
		"webhook-signature": h.Get("webhook-signature"),
	}, tolerance)
}
