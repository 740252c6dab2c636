package lockstep

// These tests run against real sidecars that the Rust harness starts
// (tests/src/clients.rs); run them through `make test` or
// `cargo test -p lockstep-tests --test clients`.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func env(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set: run through `cargo test -p lockstep-tests --test clients`", name)
	}
	return value
}

func control(t *testing.T, action, target string) {
	t.Helper()
	resp, err := http.Post(env(t, "LOCKSTEP_TEST_CONTROL")+"/"+action+"/"+target, "application/json", nil)
	if err != nil {
		t.Fatalf("control %s %s: %v", action, target, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("control %s %s: HTTP %d", action, target, resp.StatusCode)
	}
}

func readJSON(t *testing.T, path string, out any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
}

type step struct {
	Call    string         `json:"call"`
	Wait    float64        `json:"wait_secs"`
	Pool    string         `json:"pool"`
	Args    map[string]any `json:"args"`
	Save    string         `json:"save"`
	Expect  map[string]any `json:"expect"`
	Present []string       `json:"present"`
	Error   *struct {
		Code   string `json:"code"`
		Kind   string `json:"kind"`
		Status int    `json:"status"`
	} `json:"error"`
}

var byteArgs = map[string]bool{"plaintext": true, "associated_data": true, "data": true, "payload": true, "signature": true}

func lookup(value any, path string) (any, bool) {
	for _, part := range strings.Split(path, ".") {
		switch v := value.(type) {
		case map[string]any:
			next, ok := v[part]
			if !ok {
				return nil, false
			}
			value = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i >= len(v) {
				return nil, false
			}
			value = v[i]
		default:
			return nil, false
		}
	}
	return value, true
}

// resolve turns a case's argument into what the call takes: refs to saved
// answers, and bytes for byte arguments.
// text is a built argument as the call takes it: bytes for a bytes argument.
func text(s, name string) any {
	if byteArgs[name] {
		return []byte(s)
	}
	return s
}

func resolve(t *testing.T, arg any, saved map[string]any, name string) any {
	switch v := arg.(type) {
	case map[string]any:
		if ref, ok := v["ref"].(string); ok && len(v) == 2 && v["segment"] != nil {
			value, found := lookup(saved, ref)
			if !found {
				t.Fatalf("no saved value %s", ref)
			}
			return strings.Split(value.(string), ".")[int(v["segment"].(float64))]
		}
		if repeat, ok := v["repeat"].(string); ok && len(v) == 2 {
			return text(strings.Repeat(repeat, int(v["times"].(float64))), name)
		}
		if offset, ok := v["now_plus"].(float64); ok && len(v) == 1 {
			return float64(time.Now().Unix()) + offset
		}
		if parts, ok := v["join"].([]any); ok && len(v) == 1 {
			var joined strings.Builder
			for _, part := range parts {
				joined.WriteString(resolve(t, part, saved, "").(string))
			}
			return text(joined.String(), name)
		}
		if ref, ok := v["ref"].(string); ok && len(v) == 1 {
			value, found := lookup(saved, ref)
			if !found {
				t.Fatalf("no saved value %s", ref)
			}
			if byteArgs[name] {
				decoded, err := base64.StdEncoding.DecodeString(value.(string))
				if err != nil {
					t.Fatal(err)
				}
				return decoded
			}
			return value
		}
		out := map[string]any{}
		for k, x := range v {
			out[k] = resolve(t, x, saved, k)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = resolve(t, x, saved, name)
		}
		return out
	case string:
		if byteArgs[name] {
			return []byte(v)
		}
	}
	return arg
}

func str(args map[string]any, name string) string { s, _ := args[name].(string); return s }

func num(args map[string]any, name string) int64 {
	switch v := args[name].(type) {
	case float64:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

func raw(args map[string]any, name string) []byte { b, _ := args[name].([]byte); return b }

func items(args map[string]any) []BatchItem {
	var out []BatchItem
	for _, x := range args["items"].([]any) {
		m := x.(map[string]any)
		out = append(out, BatchItem{Plaintext: raw(m, "plaintext"), Ciphertext: str(m, "ciphertext"), AssociatedData: raw(m, "associated_data")})
	}
	return out
}

func keysOptions(a map[string]any) KeysOptions {
	private, _ := a["private"].(bool)
	return KeysOptions{Format: str(a, "format"), Private: private}
}

// dispatch runs one call of the shared cases with this client's API.
func dispatch(ctx context.Context, c *Client, call string, a map[string]any) (any, error) {
	k := str(a, "keyring")
	switch call {
	case "health":
		return c.Health(ctx)
	case "ready":
		return c.Ready(ctx)
	case "keyrings":
		return c.Keyrings(ctx)
	case "keys":
		return c.Keys(ctx, k, keysOptions(a))
	case "version":
		return c.KeyVersion(ctx, k, uint64(num(a, "number")), keysOptions(a))
	case "kid":
		return c.KeyByKid(ctx, k, str(a, "kid"), keysOptions(a))
	case "watch":
		return c.Watch(ctx, k, str(a, "after"), time.Duration(num(a, "timeout"))*time.Second)
	case "jwks":
		return c.JWKS(ctx, k)
	case "jwt_sign":
		claims, _ := a["claims"].(map[string]any)
		return c.JWTSign(ctx, k, claims, num(a, "ttl"))
	case "jwt_verify":
		opts := VerifyOptions{Audience: str(a, "audience"), Issuer: str(a, "issuer"), IgnoreAudience: a["ignore_audience"] == true}
		if _, ok := a["leeway"]; ok {
			leeway := num(a, "leeway")
			opts.Leeway = &leeway
		}
		return c.JWTVerify(ctx, k, str(a, "token"), opts)
	case "encrypt":
		return c.Encrypt(ctx, k, raw(a, "plaintext"), raw(a, "associated_data"))
	case "decrypt":
		return c.Decrypt(ctx, k, str(a, "ciphertext"), raw(a, "associated_data"))
	case "rewrap":
		return c.Rewrap(ctx, k, str(a, "ciphertext"), raw(a, "associated_data"))
	case "encrypt_batch":
		return c.EncryptBatch(ctx, k, items(a))
	case "decrypt_batch":
		return c.DecryptBatch(ctx, k, items(a))
	case "rewrap_batch":
		return c.RewrapBatch(ctx, k, items(a))
	case "mac":
		return c.MAC(ctx, k, raw(a, "data"))
	case "mac_verify":
		return c.MACVerify(ctx, k, raw(a, "data"), str(a, "mac"))
	case "sign":
		return c.Sign(ctx, k, raw(a, "data"))
	case "verify":
		return c.Verify(ctx, k, raw(a, "data"), raw(a, "signature"), str(a, "kid"))
	case "webhook_sign":
		return c.WebhookSign(ctx, k, raw(a, "payload"), str(a, "id"), num(a, "timestamp"))
	case "webhook_verify":
		headers := map[string]string{}
		for name, v := range a["headers"].(map[string]any) {
			headers[name] = fmt.Sprint(v)
		}
		return c.WebhookVerify(ctx, k, raw(a, "payload"), headers, time.Duration(num(a, "tolerance"))*time.Second)
	}
	return nil, fmt.Errorf("no call %q in this client", call)
}

// wire is an answer as the wire carried it (bytes as base64).
func wire(t *testing.T, answer any) any {
	data, err := json.Marshal(answer)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSharedCases(t *testing.T) {
	var file struct {
		Cases []struct {
			Name  string `json:"name"`
			Steps []step `json:"steps"`
		} `json:"cases"`
	}
	readJSON(t, env(t, "LOCKSTEP_TEST_CASES"), &file)
	if len(file.Cases) < 30 {
		t.Fatalf("only %d shared cases", len(file.Cases))
	}
	sign, verify := New(env(t, "LOCKSTEP_SOCKET")), New(env(t, "LOCKSTEP_TEST_VERIFY_SOCKET"))
	for _, tc := range file.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			saved := map[string]any{}
			for i, s := range tc.Steps {
				time.Sleep(time.Duration(s.Wait * float64(time.Second)))
				c := sign
				if s.Pool == "verify" {
					c = verify
				}
				args, _ := resolve(t, s.Args, saved, "").(map[string]any)
				answer, err := dispatch(context.Background(), c, s.Call, args)
				where := fmt.Sprintf("step %d (%s)", i, s.Call)
				if s.Error != nil {
					var e *Error
					if !errors.As(err, &e) {
						t.Fatalf("%s: want error %s, got %v", where, s.Error.Code, err)
					}
					if e.Code != s.Error.Code || string(e.Kind) != s.Error.Kind || e.Status != s.Error.Status {
						t.Fatalf("%s: want %+v, got %s/%s/%d", where, *s.Error, e.Code, e.Kind, e.Status)
					}
					if !errors.Is(err, Kind(s.Error.Kind)) {
						t.Fatalf("%s: errors.Is(err, %s) is false", where, s.Error.Kind)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				got := wire(t, answer)
				for path, want := range s.Expect {
					value, _ := lookup(got, path)
					if want := resolve(t, want, saved, ""); !reflect.DeepEqual(value, want) {
						t.Fatalf("%s: %s is %#v, want %#v in %v", where, path, value, want, got)
					}
				}
				for _, path := range s.Present {
					if _, ok := lookup(got, path); !ok {
						t.Fatalf("%s: %s missing from %v", where, path, got)
					}
				}
				if s.Save != "" {
					saved[s.Save] = got
				}
			}
		})
	}
}

func TestEveryCodeMapsToTheSharedKind(t *testing.T) {
	var file struct {
		Codes    map[string]string `json:"codes"`
		ByStatus map[string]string `json:"by_status"`
	}
	readJSON(t, env(t, "LOCKSTEP_TEST_ERRORS"), &file)
	mine := map[string]string{}
	for code, kind := range kindOfCode {
		mine[code] = string(kind)
	}
	if !reflect.DeepEqual(mine, file.Codes) {
		t.Fatalf("codes differ from client-errors.json:\n%v\n%v", mine, file.Codes)
	}
	statuses := map[string]string{}
	for status, kind := range kindOfStatus {
		statuses[strconv.Itoa(status)] = string(kind)
	}
	if !reflect.DeepEqual(statuses, file.ByStatus) {
		t.Fatalf("statuses differ: %v %v", statuses, file.ByStatus)
	}
	if KindOf("brand_new", 404) != KindNotFound || KindOf("brand_new", 418) != KindInvalidRequest {
		t.Fatal("an unknown code takes the kind of its status")
	}
}

func TestAnUnreachableSocketIsATypedError(t *testing.T) {
	_, err := New(filepath.Join(t.TempDir(), "absent.sock")).Health(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Code != "socket_unreachable" || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("%v", err)
	}
}

func TestTheSocketDefaultsToTheEnvironment(t *testing.T) {
	t.Setenv("LOCKSTEP_SOCKET", "/tmp/elsewhere.sock")
	if New("").Socket() != "/tmp/elsewhere.sock" {
		t.Fatal(New("").Socket())
	}
	t.Setenv("LOCKSTEP_SOCKET", "")
	if New("").Socket() != DefaultSocket {
		t.Fatal(New("").Socket())
	}
}

func TestVersionedWithTheProject(t *testing.T) {
	cargo, err := os.ReadFile("../../../Cargo.toml")
	if err != nil {
		t.Fatal(err)
	}
	found := regexp.MustCompile(`(?m)^version = "([^"]+)"`).FindSubmatch(cargo)
	if found == nil || string(found[1]) != Version {
		t.Fatalf("Version %s, Cargo.toml %q", Version, found)
	}
}

func TestAKeptAliveClientSurvivesASidecarRestart(t *testing.T) {
	c := New(env(t, "LOCKSTEP_SOCKET"))
	ctx := context.Background()
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	control(t, "restart", "web")
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}
