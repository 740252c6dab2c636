package lockstep

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"time"
)

// KeySetOptions tune a KeySet; the zero value is sensible.
type KeySetOptions struct {
	// OnChange is called from the KeySet's goroutine after each change,
	// the first answer included.
	OnChange func(*Keys)
	// WatchTimeout is each long-poll's wait (default: the sidecar's).
	WatchTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered retry after an error
	// (defaults 200 ms and 10 s).
	BackoffMin, BackoffMax time.Duration
}

// KeySet is a keyring's keys kept current by one goroutine waiting on the
// watch long-poll: reads never touch the socket, and through errors and
// sidecar restarts the last good answer stays.
type KeySet struct {
	client  *Client
	keyring string
	opts    KeySetOptions

	mu      sync.RWMutex
	current *Keys
	lastErr error
	changes int

	ready     chan struct{}
	readyOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

// NewKeySet starts watching keyring; Close stops it.
func NewKeySet(client *Client, keyring string, opts KeySetOptions) *KeySet {
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 200 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &KeySet{client: client, keyring: keyring, opts: opts, ready: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go k.run(ctx)
	return k
}

// Current is the last good answer (nil until the first).
func (k *KeySet) Current() *Keys {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// Verifying is the verification set of the last good answer, less any
// version whose expires_at has passed by this machine's clock: the answer
// is kept through a sidecar outage, but an expired key never verifies
// from it.
func (k *KeySet) Verifying() []KeyVersion {
	current := k.Current()
	if current == nil {
		return nil
	}
	now := time.Now().Unix()
	out := make([]KeyVersion, 0, len(current.Verifying))
	for _, v := range current.Verifying {
		if v.ExpiresAt == nil || *v.ExpiresAt > now {
			out = append(out, v)
		}
	}
	return out
}

// Find is the version of Verifying with this key id, or nil.
func (k *KeySet) Find(kid string) *KeyVersion {
	for _, v := range k.Verifying() {
		if v.Kid == kid {
			return &v
		}
	}
	return nil
}

// LastError is the most recent error of the watch (nil after a success).
func (k *KeySet) LastError() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.lastErr
}

// Changes counts the answers taken in.
func (k *KeySet) Changes() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.changes
}

// WaitReady waits for the first answer.
func (k *KeySet) WaitReady(ctx context.Context) error {
	select {
	case <-k.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the goroutine and waits for it.
func (k *KeySet) Close() {
	k.cancel()
	<-k.done
}

func (k *KeySet) run(ctx context.Context) {
	defer close(k.done)
	state := ""
	failures := 0
	for ctx.Err() == nil {
		keys, err := k.client.Watch(ctx, k.keyring, state, k.opts.WatchTimeout)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			k.mu.Lock()
			k.lastErr = err
			k.mu.Unlock()
			failures++
			delay := k.opts.BackoffMin << min(failures-1, 16)
			if delay > k.opts.BackoffMax || delay <= 0 {
				delay = k.opts.BackoffMax
			}
			delay = time.Duration(float64(delay) * (0.5 + rand.Float64()/2))
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		failures = 0
		k.mu.Lock()
		k.lastErr = nil
		k.mu.Unlock()
		if keys.State == state {
			continue
		}
		state = keys.State
		keys.Changed = nil
		k.mu.Lock()
		k.current = keys
		k.changes++
		k.mu.Unlock()
		k.readyOnce.Do(func() { close(k.ready) })
		if k.opts.OnChange != nil {
			k.callback(keys)
		}
	}
}

// callback runs OnChange; a panic in the app's callback must not end the
// watch (or the process).
func (k *KeySet) callback(keys *Keys) {
	defer func() {
		if r := recover(); r != nil {
			k.mu.Lock()
			k.lastErr = fmt.Errorf("lockstep: KeySet OnChange panicked: %v", r)
			k.mu.Unlock()
		}
	}()
	k.opts.OnChange(keys)
}
