// Package e2e builds the host binaries and the fixture plugin, runs the host
// against the fixture, and drives it through the control API.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	binDir       string // built binaries
	hostBins     = map[string]string{}
	fixtureMux   string
	fixtureNoMux string
)

func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

func build(dir, out string, args ...string) error {
	cmd := exec.Command(goTool(), append([]string{"build", "-o", out}, args...)...)
	cmd.Dir = dir
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir, err = os.MkdirTemp("", "gohost-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)

	start := time.Now()
	hostBins["openbao"] = filepath.Join(binDir, "lockstep-sdkhost")
	fixtureMux = filepath.Join(binDir, "fixture-mux")
	fixtureNoMux = filepath.Join(binDir, "fixture-nomux")
	steps := []struct {
		dir, out string
		args     []string
	}{
		{root, hostBins["openbao"], []string{"./cmd/lockstep-sdkhost"}},
		{root, fixtureMux, []string{"./internal/fixtureplugin"}},
		{root, fixtureNoMux, []string{"-ldflags", "-X main.multiplex=false", "./internal/fixtureplugin"}},
	}
	for _, s := range steps {
		if err := build(s.dir, s.out, s.args...); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", s.out, err)
			return 1
		}
	}
	// The HashiCorp Vault SDK host lives in its own module.
	if _, err := os.Stat(filepath.Join(root, "vault", "go.mod")); err == nil && os.Getenv("LOCKSTEP_SKIP_VAULT_HOST") == "" {
		out := filepath.Join(binDir, "lockstep-sdkhost-vault")
		generate := exec.Command(filepath.Join(root, "vault", "internal", "vaulthost", "generate.sh"))
		generate.Stdout, generate.Stderr = os.Stderr, os.Stderr
		if err := generate.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "generating the Vault SDK host's sources: %v\n", err)
			return 1
		}
		if err := build(filepath.Join(root, "vault"), out, "./cmd/lockstep-sdkhost-vault"); err != nil {
			fmt.Fprintf(os.Stderr, "building the Vault SDK host: %v\n", err)
			return 1
		}
		hostBins["vault"] = out
	}
	fmt.Fprintf(os.Stderr, "e2e: built binaries in %s\n", time.Since(start).Round(time.Millisecond))
	return m.Run()
}

// host is one running harness process.
type host struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	log   string
	done  chan error
}

// pluginDir copies a fixture binary to a fresh plugin directory as "lockstep".
func pluginDir(t *testing.T, fixture string) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lockstep"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startHost(t *testing.T, bin, dir string, extra ...string) *host {
	t.Helper()
	h, err := tryStartHost(t, bin, dir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.stop(syscall.SIGTERM) })
	return h
}

func tryStartHost(t *testing.T, bin, dir string, extra ...string) (*host, error) {
	logPath := filepath.Join(t.TempDir(), "host.log")
	args := append([]string{"-plugin-dir", dir, "-name", "lockstep", "-log", logPath}, extra...)
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &host{t: t, cmd: cmd, stdin: stdin, log: logPath, done: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { h.done <- cmd.Wait() }()
	select {
	case line, ok := <-lines:
		if !ok || !strings.HasPrefix(line, "LISTEN 127.0.0.1:") {
			err := <-h.done
			return nil, fmt.Errorf("host did not print LISTEN (got %q, exit %v): %s\nlog:\n%s", line, err, stderr.String(), readFile(logPath))
		}
		h.addr = "http://" + strings.TrimPrefix(line, "LISTEN ")
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("host did not start in time: %s", stderr.String())
	}
	return h, nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// stop sends sig (or closes stdin when sig is 0) and waits for the exit.
func (h *host) stop(sig syscall.Signal) error {
	if h.cmd.ProcessState != nil {
		return nil
	}
	if sig == 0 {
		_ = h.stdin.Close()
	} else {
		_ = h.cmd.Process.Signal(sig)
	}
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		h.t.Errorf("host did not exit in time; log:\n%s", readFile(h.log))
		return fmt.Errorf("timeout")
	}
}

func (h *host) call(method, path string, body any) (int, map[string]any) {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.addr+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v\nlog:\n%s", method, path, err, readFile(h.log))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			h.t.Fatalf("%s %s: bad JSON %q", method, path, raw)
		}
	}
	return resp.StatusCode, out
}

func (h *host) mustCall(method, path string, body any) map[string]any {
	h.t.Helper()
	code, out := h.call(method, path, body)
	if code != http.StatusOK {
		h.t.Fatalf("%s %s: HTTP %d %v\nlog tail:\n%s", method, path, code, out, tail(readFile(h.log), 40))
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (h *host) mount(path string, config map[string]string) map[string]any {
	h.t.Helper()
	return h.mustCall("POST", "/v1/mounts", map[string]any{"path": path, "config": config})
}

// req runs a plugin request and returns (status, data, full reply).
func (h *host) req(mount, op, path string, data map[string]any) (int, map[string]any, map[string]any) {
	h.t.Helper()
	body := map[string]any{"mount": mount, "operation": op, "path": path}
	if data != nil {
		body["data"] = data
	}
	out := h.mustCall("POST", "/v1/request", body)
	status := int(out["status"].(float64))
	var d map[string]any
	if r, ok := out["response"].(map[string]any); ok {
		d, _ = r["data"].(map[string]any)
	}
	return status, d, out
}

func (h *host) expect(mount, op, path string, data map[string]any, want int) (map[string]any, map[string]any) {
	h.t.Helper()
	status, d, full := h.req(mount, op, path, data)
	if status != want {
		h.t.Fatalf("%s %s%s: status %d, want %d: %v\nlog tail:\n%s", op, mount, path, status, want, full, tail(readFile(h.log), 30))
	}
	return d, full
}

func (h *host) procs() (started, running int, pids []int) {
	h.t.Helper()
	out := h.mustCall("GET", "/v1/processes", nil)
	for _, p := range out["pids"].([]any) {
		pids = append(pids, int(p.(float64)))
	}
	return int(out["started"].(float64)), int(out["running"].(float64)), pids
}

func (h *host) storage(mount string) map[string]string {
	h.t.Helper()
	out := h.mustCall("GET", "/v1/storage?mount="+mount+"&prefix=", nil)
	res := map[string]string{}
	for k, v := range out["entries"].(map[string]any) {
		b, err := base64.StdEncoding.DecodeString(v.(string))
		if err != nil {
			h.t.Fatal(err)
		}
		res[k] = string(b)
	}
	return res
}

func (h *host) waitRunning(want int) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, running, _ := h.procs()
		if running == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("running processes: %d, want %d", running, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil {
		return false
	}
	// A zombie still answers signal 0; check its state.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(st))
	return len(fields) < 3 || fields[2] != "Z"
}

func eachHost(t *testing.T, fn func(t *testing.T, bin string, transactional bool)) {
	for _, name := range []string{"openbao", "vault"} {
		bin, ok := hostBins[name]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) { fn(t, bin, name == "openbao") })
	}
}

func num(v any) int {
	switch x := v.(type) {
	case float64:
		return int(x)
	case json.Number:
		n, _ := x.Int64()
		return int(n)
	}
	return -1
}
