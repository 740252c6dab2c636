package e2e

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMultiplexedLifecycle walks a multiplexed plugin through everything the
// control API offers.
func TestMultiplexedLifecycle(t *testing.T) {
	eachHost(t, func(t *testing.T, bin string, transactional bool) {
		dir := pluginDir(t, fixtureMux)
		h := startHost(t, bin, dir, "-version", "v0.1.0")

		// Two mounts, one process.
		a := h.mount("a/", map[string]string{"k": "v"})
		b := h.mount("b", nil)
		if a["multiplexed"] != true || b["multiplexed"] != true {
			t.Fatalf("expected multiplexed mounts: %v %v", a, b)
		}
		if a["plugin_version"] != "v0.1.0" || a["type"] != "secret" || a["path"] != "a/" || b["path"] != "b/" {
			t.Fatalf("mount reply: %v", a)
		}
		if a["pid"] != b["pid"] {
			t.Fatalf("mounts do not share the process: %v vs %v", a["pid"], b["pid"])
		}
		if started, running, _ := h.procs(); started != 1 || running != 1 {
			t.Fatalf("processes: started %d running %d, want 1 1", started, running)
		}
		if code, _ := h.call("POST", "/v1/mounts", map[string]any{"path": "a/"}); code != http.StatusBadRequest {
			t.Fatalf("mounting an existing path: HTTP %d", code)
		}

		// What the host sent the plugin.
		info, _ := h.expect("a/", "read", "info", nil, 200)
		conf := info["config"].(map[string]any)
		if conf["k"] != "v" || conf["plugin_name"] != "lockstep" || conf["plugin_type"] != "secret" || conf["plugin_version"] != "v0.1.0" {
			t.Fatalf("setup config: %v", conf)
		}
		if info["transactional"] != transactional {
			t.Fatalf("transactional = %v, want %v", info["transactional"], transactional)
		}
		if num(info["default_lease_ttl"]) != 768*3600 || num(info["max_lease_ttl"]) != 768*3600 ||
			info["tainted"] != false || info["caching_disabled"] != false || info["local_mount"] != false ||
			num(info["replication_state"]) != 0 || info["mlock_enabled"] != false {
			t.Fatalf("system view: %v", info)
		}
		if info["mount_point"] != "a/" || info["mount_type"] != "lockstep" || !strings.HasPrefix(info["mount_accessor"].(string), "lockstep_") {
			t.Fatalf("request mount fields: %v", info)
		}
		if info["request_id"] == "" || info["backend_uuid"] != a["backend_uuid"] {
			t.Fatalf("request id / backend uuid: %v", info)
		}
		if transactional {
			if info["plugin_env_version"] != "v2.6.2" || info["env_bao_version"] != "v2.6.2" {
				t.Fatalf("server version: %v", info)
			}
			if !strings.Contains(info["setup_write_error"].(string), "cannot write to storage during setup") {
				t.Fatalf("storage was writable during Setup: %q", info["setup_write_error"])
			}
		}
		if num(info["initialize_calls"]) != 1 {
			t.Fatalf("initialize calls: %v", info["initialize_calls"])
		}
		tokInfo, _ := h.reqWith(map[string]any{"mount": "a/", "operation": "read", "path": "info", "client_token": "s.secret", "display_name": "dn", "entity_id": "ent"})
		if tok := tokInfo["client_token"].(string); tok == "" || tok == "s.secret" || tokInfo["display_name"] != "dn" || tokInfo["entity_id"] != "ent" {
			t.Fatalf("token must reach the plugin salted: %v", tokInfo)
		}

		// CRUD round trip; the existence check picks create vs update.
		d, full := h.expect("a/", "update", "kv/foo", map[string]any{"value": "bar"}, 200)
		if d["operation"] != "create" || full["operation"] != "create" {
			t.Fatalf("first write should be a create: %v", full)
		}
		d, _ = h.expect("a/", "create", "kv/foo", map[string]any{"value": "baz"}, 200)
		if d["operation"] != "update" {
			t.Fatalf("second write should be an update: %v", d)
		}
		d, _ = h.expect("a/", "read", "kv/foo", nil, 200)
		if d["value"] != "baz" {
			t.Fatalf("read: %v", d)
		}
		h.expect("a/", "update", "kv/other", map[string]any{"value": "1"}, 200)
		d, _ = h.expect("a/", "list", "kv", nil, 200)
		if keys := d["keys"].([]any); len(keys) != 2 || keys[0] != "foo" || keys[1] != "other" {
			t.Fatalf("list: %v", d)
		}
		h.expect("b/", "read", "kv/foo", nil, 404) // mounts are isolated
		h.expect("b/", "list", "kv/", nil, 404)    // empty list is a 404, as on the server
		h.expect("a/", "delete", "kv/other", nil, 204)
		h.expect("a/", "read", "kv/other", nil, 404)
		_, full = h.expect("a/", "update", "kv/bad", map[string]any{}, 400)
		if full["error"] != "missing value" {
			t.Fatalf("error response: %v", full)
		}

		// Unknown path, help, error mapping.
		_, full = h.expect("a/", "read", "no/such/path", nil, 404)
		if !strings.Contains(full["error"].(string), "unsupported path") {
			t.Fatalf("unknown path: %v", full)
		}
		d, _ = h.expect("a/", "help", "kv/foo", nil, 200)
		if !strings.Contains(d["help"].(string), "Stores a string value") {
			t.Fatalf("help: %v", d)
		}
		for kind, want := range map[string]int{"permission": 403, "response": 400, "invalid": 400, "coded": 418, "unsupported-op": 405, "internal": 500} {
			h.expect("a/", "read", "fail/"+kind, nil, want)
		}

		// The periodic func runs on rollback.
		h.expect("a/", "rollback", "", nil, 204)
		h.expect("a/", "rollback", "", nil, 204)
		info, _ = h.expect("a/", "read", "info", nil, 200)
		if num(info["periodic_calls"]) != 2 || h.storage("a/")["periodic/count"] != "2" {
			t.Fatalf("periodic: %v / %v", info["periodic_calls"], h.storage("a/"))
		}

		// A put fault makes the write fail with 500 and stores nothing.
		h.mustCall("POST", "/v1/faults", map[string]any{"mount": "a/", "op": "put", "key_prefix": "kv/", "count": 1})
		_, full = h.expect("a/", "update", "kv/faulty", map[string]any{"value": "x"}, 500)
		if !strings.Contains(full["error"].(string), "injected storage fault") {
			t.Fatalf("fault error: %v", full)
		}
		if _, ok := h.storage("a/")["kv/faulty"]; ok {
			t.Fatal("the failed write was stored")
		}
		h.expect("a/", "update", "kv/faulty", map[string]any{"value": "x"}, 200) // count exhausted
		if _, ok := h.storage("a/")["kv/faulty"]; !ok {
			t.Fatal("the retried write was not stored")
		}
		h.mustCall("DELETE", "/v1/faults", nil)
		// A get fault on the existence check is an internal error.
		h.mustCall("POST", "/v1/faults", map[string]any{"mount": "a/", "op": "get", "key_prefix": "kv/foo"})
		_, full = h.expect("a/", "update", "kv/foo", map[string]any{"value": "y"}, 500)
		if full["error"] != "internal error" {
			t.Fatalf("existence check failure: %v", full)
		}
		h.mustCall("DELETE", "/v1/faults", nil)

		if transactional {
			// Transactions: a failing commit leaves nothing; a put fault inside
			// the transaction too.
			h.mustCall("POST", "/v1/faults", map[string]any{"mount": "a/", "op": "commit", "key_prefix": "txn/t1/"})
			h.expect("a/", "update", "txn/t1", nil, 500)
			h.mustCall("POST", "/v1/faults", map[string]any{"mount": "a/", "op": "put", "key_prefix": "txn/t2/", "after": 1})
			h.expect("a/", "update", "txn/t2", nil, 500)
			st := h.storage("a/")
			for k := range st {
				if strings.HasPrefix(k, "txn/") {
					t.Fatalf("failed transaction left %q", k)
				}
			}
			h.mustCall("DELETE", "/v1/faults", nil)
			h.expect("a/", "update", "txn/t3", nil, 204)
			st = h.storage("a/")
			if st["txn/t3/a"] != "a" || st["txn/t3/b"] != "b" {
				t.Fatalf("transaction not applied: %v", st)
			}
		}

		// Direct storage access and invalidation.
		raw := base64.StdEncoding.EncodeToString([]byte(`{"value":"planted"}`))
		h.mustCall("PUT", "/v1/storage", map[string]any{"mount": "a/", "key": "kv/planted", "value": raw})
		d, _ = h.expect("a/", "read", "kv/planted", nil, 200)
		if d["value"] != "planted" {
			t.Fatalf("planted value: %v", d)
		}
		h.mustCall("DELETE", "/v1/storage?mount=a/&key=kv/planted", nil)
		h.expect("a/", "read", "kv/planted", nil, 404)
		h.mustCall("POST", "/v1/invalidate", map[string]any{"mount": "a/", "key": "kv/foo"})
		info, _ = h.expect("a/", "read", "info", nil, 200)
		if inv := info["invalidated"].([]any); len(inv) != 1 || inv[0] != "kv/foo" {
			t.Fatalf("invalidate: %v", info["invalidated"])
		}

		// Reload keeps the data and relaunches the shared process.
		_, _, pidsBefore := h.procs()
		h.mustCall("POST", "/v1/mounts/a/reload", nil)
		started, running, pids := h.procs()
		if started != 2 || running != 1 || pids[0] == pidsBefore[0] {
			t.Fatalf("after reload: started %d running %d pids %v (before %v)", started, running, pids, pidsBefore)
		}
		if alive(pidsBefore[0]) {
			t.Fatalf("old process %d still alive", pidsBefore[0])
		}
		d, _ = h.expect("a/", "read", "kv/foo", nil, 200)
		if d["value"] != "baz" {
			t.Fatalf("data after reload: %v", d)
		}
		infoA, _ := h.expect("a/", "read", "info", nil, 200)
		infoB, _ := h.expect("b/", "read", "info", nil, 200)
		if num(infoA["pid"]) != pids[0] || num(infoB["pid"]) != pids[0] || num(infoB["initialize_calls"]) != 1 {
			t.Fatalf("after reload: a %v b %v pids %v", infoA["pid"], infoB["pid"], pids)
		}
		if h.storage("a/")["init/count"] != "2" || h.storage("b/")["init/count"] != "2" {
			t.Fatalf("Initialize should have run again on both mounts: %v %v", h.storage("a/"), h.storage("b/"))
		}

		// A crashed process is relaunched on the next request (lazily).
		h.expect("a/", "update", "crash", nil, 204)
		h.waitRunning(0)
		d, _ = h.expect("a/", "read", "kv/foo", nil, 200)
		if d["value"] != "baz" {
			t.Fatalf("data after crash: %v", d)
		}
		h.expect("b/", "read", "info", nil, 200)
		if started, running, _ := h.procs(); started != 3 || running != 1 {
			t.Fatalf("after crash: started %d running %d", started, running)
		}

		// The process goes with its last mount.
		_, _, pids = h.procs()
		h.mustCall("DELETE", "/v1/mounts/a/", nil)
		if _, running, _ := h.procs(); running != 1 {
			t.Fatalf("process should stay for b/: running %d", running)
		}
		if code, _ := h.call("POST", "/v1/request", map[string]any{"mount": "a/", "operation": "read", "path": "info"}); code != http.StatusNotFound {
			t.Fatalf("request to an unmounted path: HTTP %d", code)
		}
		h.mustCall("DELETE", "/v1/mounts/b/", nil)
		if _, running, _ := h.procs(); running != 0 || alive(pids[0]) {
			t.Fatalf("process %d should be gone after the last unmount (running %d)", pids[0], running)
		}

		// Storage survives unmount + remount of the same path.
		h.mount("a/", nil)
		d, _ = h.expect("a/", "read", "kv/foo", nil, 200)
		// Initialize ran at mount, reload, crash recovery and remount.
		if d["value"] != "baz" || h.storage("a/")["init/count"] != "4" {
			t.Fatalf("after remount: %v %v", d, h.storage("a/"))
		}
		h.mustCall("DELETE", "/v1/mounts/a/", nil)

		// The binary is checked against the SHA-256 taken at start before
		// every launch.
		f, err := os.OpenFile(filepath.Join(dir, "lockstep"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = f.Write([]byte("tampered"))
		f.Close()
		code, out := h.call("POST", "/v1/mounts", map[string]any{"path": "c/"})
		if code != http.StatusInternalServerError || !strings.Contains(out["error"].(string), "checksum") {
			t.Fatalf("tampered binary: HTTP %d %v", code, out)
		}
		if started, running, _ := h.procs(); started != 4 || running != 0 {
			t.Fatalf("tampered binary must not run: started %d running %d", started, running)
		}

		// SIGTERM: clean exit.
		if err := h.stop(syscall.SIGTERM); err != nil {
			t.Fatalf("host exit: %v", err)
		}
		if !strings.Contains(readFile(h.log), "[INFO] lockstep-sdkhost") {
			t.Fatalf("log lacks host records:\n%s", tail(readFile(h.log), 20))
		}
	})
}

// TestNotMultiplexed: a plugin served without multiplexing gets one process
// per mount; reloading one mount leaves the other's process alone.
func TestNotMultiplexed(t *testing.T) {
	eachHost(t, func(t *testing.T, bin string, transactional bool) {
		h := startHost(t, bin, pluginDir(t, fixtureNoMux), "-version", "v0.1.0")
		a := h.mount("a/", nil)
		b := h.mount("b/", nil)
		if a["multiplexed"] != false || b["multiplexed"] != false || a["pid"] == b["pid"] {
			t.Fatalf("mounts: %v %v", a, b)
		}
		if started, running, _ := h.procs(); started != 2 || running != 2 {
			t.Fatalf("started %d running %d", started, running)
		}
		h.expect("a/", "update", "kv/x", map[string]any{"value": "1"}, 200)
		h.mustCall("POST", "/v1/mounts/a/reload", nil)
		started, running, pids := h.procs()
		if started != 3 || running != 2 || !alive(num(b["pid"])) || alive(num(a["pid"])) {
			t.Fatalf("after reload: started %d running %d pids %v (a %v b %v)", started, running, pids, a["pid"], b["pid"])
		}
		d, _ := h.expect("a/", "read", "kv/x", nil, 200)
		if d["value"] != "1" {
			t.Fatalf("after reload: %v", d)
		}
		h.mustCall("DELETE", "/v1/mounts/a/", nil)
		if _, running, _ := h.procs(); running != 1 {
			t.Fatalf("after unmount: running %d", running)
		}
		// Closing stdin stops the host, and its plugin processes with it.
		_, _, pids = h.procs()
		if err := h.stop(0); err != nil {
			t.Fatalf("host exit after stdin EOF: %v", err)
		}
		for _, p := range pids {
			if alive(p) {
				t.Fatalf("plugin process %d outlived the host", p)
			}
		}
	})
}

// TestVersionMismatch: registering with a version the plugin does not
// report fails, as on the server.
func TestVersionMismatch(t *testing.T) {
	eachHost(t, func(t *testing.T, bin string, transactional bool) {
		_, err := tryStartHost(t, bin, pluginDir(t, fixtureMux), "-version", "v9.9.9")
		if err == nil || !strings.Contains(err.Error(), "version mismatch") {
			t.Fatalf("expected a version mismatch, got %v", err)
		}
	})
}

// reqWith posts a raw request body and returns the response data.
func (h *host) reqWith(body map[string]any) (map[string]any, map[string]any) {
	h.t.Helper()
	out := h.mustCall("POST", "/v1/request", body)
	if num(out["status"]) != 200 {
		h.t.Fatalf("request %v: %v", body, out)
	}
	return out["response"].(map[string]any)["data"].(map[string]any), out
}
