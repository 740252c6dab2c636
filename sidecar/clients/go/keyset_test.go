package lockstep

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func watchRequests(t *testing.T, c *Client) int {
	text, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "lockstep_sidecar_requests_total") && strings.Contains(line, `route="watch"`) {
			var n float64
			fields := strings.Fields(line)
			if _, err := fmt.Sscan(fields[len(fields)-1], &n); err == nil {
				total += int(n)
			}
		}
	}
	return total
}

func TestARotationReachesTheKeySetWithoutPolling(t *testing.T) {
	c := New(env(t, "LOCKSTEP_SOCKET"))
	changed := make(chan *Keys, 16)
	keys := NewKeySet(c, "hooks", KeySetOptions{OnChange: func(k *Keys) { changed <- k }})
	defer keys.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := keys.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	before := len(keys.Current().Verifying)
	top := keys.Current().Verifying[before-1].Version
	requests := watchRequests(t, c)
	control(t, "rotate", "hooks")
	started := time.Now()
	waitFor(t, "the published version", 10*time.Second, func() bool { return len(keys.Current().Verifying) > before })
	if latency := time.Since(started); latency > 10*time.Second {
		t.Fatalf("latency %v", latency)
	}
	if got := keys.Current().Verifying[before].Version; got != top+1 {
		t.Fatalf("new version %d, want %d", got, top+1)
	}
	if n := watchRequests(t, c) - requests; n > 4 {
		t.Fatalf("%d watch requests for one change: polling, not long-polling", n)
	}
	waitFor(t, "a callback", time.Second, func() bool { return len(changed) >= 2 })
	waitFor(t, "the new version signing", 30*time.Second, func() bool {
		s := keys.Current().Signing
		return s != nil && s.Version == top+1
	})
}

func TestTheLastGoodStateSurvivesASidecarRestart(t *testing.T) {
	c := New(env(t, "LOCKSTEP_SOCKET"))
	keys := NewKeySet(c, "jwt", KeySetOptions{BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
	defer keys.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := keys.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	good := keys.Current()
	control(t, "stop", "web")
	restarted := false
	defer func() {
		if !restarted {
			control(t, "start", "web")
		}
	}()
	waitFor(t, "an error seen by the watch", 15*time.Second, func() bool { return keys.LastError() != nil })
	if keys.Current() != good || keys.Current().Find(good.Signing.Kid) == nil {
		t.Fatal("the last good answer is kept while the sidecar is away")
	}
	control(t, "start", "web")
	restarted = true
	control(t, "rotate", "jwt")
	waitFor(t, "the rotation after the restart", 30*time.Second, func() bool {
		return len(keys.Current().Verifying) > len(good.Verifying)
	})
	if err := keys.LastError(); err != nil {
		t.Fatalf("a success clears the last error, still: %v", err)
	}
}

func TestAnExpiredVersionNeverVerifiesFromTheLastGoodAnswer(t *testing.T) {
	// No sidecar at all: the watch keeps failing, the answer stays.
	keys := NewKeySet(New(t.TempDir()+"/absent.sock"), "hooks", KeySetOptions{BackoffMin: 50 * time.Millisecond})
	defer keys.Close()
	now := time.Now().Unix()
	past, future := now-1, now+3600
	keys.mu.Lock()
	keys.current = &Keys{Keyring: "hooks", Verifying: []KeyVersion{
		{Version: 1, Kid: "hooks-v1", ExpiresAt: &past},
		{Version: 2, Kid: "hooks-v2"},
		{Version: 3, Kid: "hooks-v3", ExpiresAt: &future},
	}}
	keys.mu.Unlock()
	time.Sleep(200 * time.Millisecond)
	var versions []uint64
	for _, v := range keys.Verifying() {
		versions = append(versions, v.Version)
	}
	if fmt.Sprint(versions) != "[2 3]" {
		t.Fatalf("verifying %v, want [2 3]", versions)
	}
	if keys.Find("hooks-v1") != nil {
		t.Fatal("the expired version was found")
	}
	if v := keys.Find("hooks-v3"); v == nil || v.Version != 3 {
		t.Fatalf("hooks-v3: %+v", v)
	}
}
