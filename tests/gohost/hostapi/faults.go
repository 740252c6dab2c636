package hostapi

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Storage operation kinds a fault can target.
const (
	OpPut    = "put"
	OpDelete = "delete"
	OpGet    = "get"
	OpList   = "list"
	OpCommit = "commit"
)

// FaultRule is the body of POST /v1/faults: the next Count storage
// operations of kind Op on keys starting with KeyPrefix in Mount fail, after
// the first After matching operations have been let through. An empty Mount
// matches every mount. For "commit", a transaction matches when KeyPrefix is
// empty or any key it wrote (put or delete) starts with KeyPrefix.
type FaultRule struct {
	ID        int    `json:"id"`
	Mount     string `json:"mount"`
	Op        string `json:"op"`
	KeyPrefix string `json:"key_prefix"`
	After     int    `json:"after"`
	Count     int    `json:"count"`
	// Bookkeeping, reported by GET /v1/faults.
	Seen     int `json:"seen"`
	Injected int `json:"injected"`
}

// Faults is the registry of active fault rules, shared by all mounts.
type Faults struct {
	mu     sync.Mutex
	nextID int
	rules  []*FaultRule
}

// NewFaults returns an empty registry.
func NewFaults() *Faults { return &Faults{nextID: 1} }

// Add registers a rule and returns its id.
func (f *Faults) Add(r FaultRule) (int, error) {
	switch r.Op {
	case OpPut, OpDelete, OpGet, OpList, OpCommit:
	default:
		return 0, Errorf(http.StatusBadRequest, "unknown fault op %q (want put|delete|get|list|commit)", r.Op)
	}
	if r.After < 0 || r.Count < 0 {
		return 0, Errorf(http.StatusBadRequest, "after and count must not be negative")
	}
	if r.Count == 0 {
		r.Count = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r.ID = f.nextID
	r.Seen, r.Injected = 0, 0
	f.nextID++
	rule := r
	f.rules = append(f.rules, &rule)
	return rule.ID, nil
}

// Clear removes every rule.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// List returns a copy of the rules.
func (f *Faults) List() []FaultRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FaultRule, 0, len(f.rules))
	for _, r := range f.rules {
		out = append(out, *r)
	}
	return out
}

// Check is called by a mount's storage before an operation on key. It
// returns the injected error, or nil to let the operation through.
func (f *Faults) Check(mount, op, key string) error {
	return f.check(mount, op, func(prefix string) bool { return strings.HasPrefix(key, prefix) }, key)
}

// CheckCommit is called before a transaction commit with the keys the
// transaction wrote.
func (f *Faults) CheckCommit(mount string, written []string) error {
	return f.check(mount, OpCommit, func(prefix string) bool {
		if prefix == "" {
			return true
		}
		for _, k := range written {
			if strings.HasPrefix(k, prefix) {
				return true
			}
		}
		return false
	}, strings.Join(written, ","))
}

func (f *Faults) check(mount, op string, match func(prefix string) bool, what string) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var fail *FaultRule
	for _, r := range f.rules {
		if r.Op != op || (r.Mount != "" && r.Mount != mount) || !match(r.KeyPrefix) {
			continue
		}
		if r.Injected >= r.Count {
			continue
		}
		r.Seen++
		if r.Seen <= r.After {
			continue
		}
		// The first rule due to fire fails the operation; every other
		// matching rule still counts it as seen.
		if fail == nil {
			r.Injected++
			fail = r
		}
	}
	if fail != nil {
		return fmt.Errorf("injected storage fault: %s %q failed (lockstep-sdkhost fault rule %d)", op, what, fail.ID)
	}
	return nil
}
