package baohost

import (
	"context"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/openbao/openbao/sdk/v2/logical"
	"github.com/openbao/openbao/sdk/v2/physical"
	"github.com/openbao/openbao/sdk/v2/physical/inmem"

	"lockstep/gohost/hostapi"
)

// mountStorage is one mount path's storage. It is OpenBao's transactional
// in-memory physical backend, wrapped by guard (fault injection, the
// read-only window during Setup, and the barrier view's relative path
// check) and exposed to the plugin as logical storage via the SDK's
// logical.NewLogicalStorage, so the plugin sees IsTransactional=true.
type mountStorage struct {
	raw   physical.TransactionalBackend
	guard *guardBackend
	view  logical.Storage
}

func newMountStorage(mount string, faults *hostapi.Faults, logger hclog.Logger) (*mountStorage, error) {
	b, err := inmem.NewInmem(map[string]string{}, logger)
	if err != nil {
		return nil, err
	}
	raw, ok := b.(physical.TransactionalBackend)
	if !ok {
		return nil, errNotTransactional
	}
	g := &guardBackend{mount: mount, faults: faults, inner: raw}
	return &mountStorage{raw: raw, guard: g, view: logical.NewLogicalStorage(g)}, nil
}

var errNotTransactional = &hostapi.Error{Code: 500, Msg: "inmem backend is not transactional"}

// setReadOnly makes writes fail with err (nil: writable again). The server
// marks a new mount's barrier view read-only with logical.ErrSetupReadOnly
// while the backend is constructed (factory + Setup), then lifts it before
// Initialize.
func (s *mountStorage) setReadOnly(err error) {
	if err == nil {
		s.guard.readOnly.Store(nil)
		return
	}
	s.guard.readOnly.Store(&err)
}

// dump returns every key under prefix (recursively) with its value,
// bypassing faults.
func (s *mountStorage) dump(ctx context.Context, prefix string) (map[string][]byte, error) {
	out := map[string][]byte{}
	keys, err := collectKeys(ctx, s.raw, prefix)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		e, err := s.raw.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		if e != nil {
			out[k] = e.Value
		}
	}
	return out, nil
}

func collectKeys(ctx context.Context, b physical.Backend, prefix string) ([]string, error) {
	var out []string
	queue := []string{prefix}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		// A prefix that is not a "directory": list its parent and filter.
		dir := ""
		if i := strings.LastIndex(prefix, "/"); i >= 0 {
			dir = prefix[:i+1]
		}
		queue = []string{dir}
	}
	for len(queue) > 0 {
		dir := queue[0]
		queue = queue[1:]
		keys, err := b.List(ctx, dir)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			full := dir + k
			if !strings.HasPrefix(full, prefix) && !strings.HasPrefix(prefix, full) {
				continue
			}
			if strings.HasSuffix(k, "/") {
				queue = append(queue, full)
				continue
			}
			if strings.HasPrefix(full, prefix) {
				out = append(out, full)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// guardBackend is a physical.TransactionalBackend wrapper.
type guardBackend struct {
	mount    string
	faults   *hostapi.Faults
	inner    physical.TransactionalBackend
	readOnly atomic.Pointer[error]
}

var (
	_ physical.TransactionalBackend = (*guardBackend)(nil)
	_ physical.Transaction          = (*guardTx)(nil)
)

func (g *guardBackend) pre(op, key string) error {
	// BarrierView.sanityCheck on the server.
	if strings.Contains(key, "..") {
		return logical.ErrRelativePath
	}
	if op == hostapi.OpPut || op == hostapi.OpDelete {
		if p := g.readOnly.Load(); p != nil {
			return *p
		}
	}
	return g.faults.Check(g.mount, op, key)
}

func (g *guardBackend) Put(ctx context.Context, e *physical.Entry) error {
	if err := g.pre(hostapi.OpPut, e.Key); err != nil {
		return err
	}
	return g.inner.Put(ctx, e)
}

func (g *guardBackend) Get(ctx context.Context, key string) (*physical.Entry, error) {
	if err := g.pre(hostapi.OpGet, key); err != nil {
		return nil, err
	}
	return g.inner.Get(ctx, key)
}

func (g *guardBackend) Delete(ctx context.Context, key string) error {
	if err := g.pre(hostapi.OpDelete, key); err != nil {
		return err
	}
	return g.inner.Delete(ctx, key)
}

func (g *guardBackend) List(ctx context.Context, prefix string) ([]string, error) {
	if err := g.pre(hostapi.OpList, prefix); err != nil {
		return nil, err
	}
	return g.inner.List(ctx, prefix)
}

func (g *guardBackend) ListPage(ctx context.Context, prefix, after string, limit int) ([]string, error) {
	if err := g.pre(hostapi.OpList, prefix); err != nil {
		return nil, err
	}
	return g.inner.ListPage(ctx, prefix, after, limit)
}

func (g *guardBackend) BeginTx(ctx context.Context) (physical.Transaction, error) {
	tx, err := g.inner.BeginTx(ctx)
	if err != nil {
		return nil, err
	}
	return &guardTx{g: g, inner: tx}, nil
}

func (g *guardBackend) BeginReadOnlyTx(ctx context.Context) (physical.Transaction, error) {
	tx, err := g.inner.BeginReadOnlyTx(ctx)
	if err != nil {
		return nil, err
	}
	return &guardTx{g: g, inner: tx, readOnly: true}, nil
}

// guardTx applies the same checks inside a transaction, and a "commit"
// fault turns Commit into a rollback that returns an error, so a failing
// commit leaves nothing applied.
type guardTx struct {
	g        *guardBackend
	inner    physical.Transaction
	readOnly bool

	mu      sync.Mutex
	written []string
}

func (t *guardTx) note(key string) {
	t.mu.Lock()
	t.written = append(t.written, key)
	t.mu.Unlock()
}

func (t *guardTx) Put(ctx context.Context, e *physical.Entry) error {
	if !t.readOnly {
		if err := t.g.pre(hostapi.OpPut, e.Key); err != nil {
			return err
		}
	}
	if err := t.inner.Put(ctx, e); err != nil {
		return err
	}
	t.note(e.Key)
	return nil
}

func (t *guardTx) Get(ctx context.Context, key string) (*physical.Entry, error) {
	if err := t.g.pre(hostapi.OpGet, key); err != nil {
		return nil, err
	}
	return t.inner.Get(ctx, key)
}

func (t *guardTx) Delete(ctx context.Context, key string) error {
	if !t.readOnly {
		if err := t.g.pre(hostapi.OpDelete, key); err != nil {
			return err
		}
	}
	if err := t.inner.Delete(ctx, key); err != nil {
		return err
	}
	t.note(key)
	return nil
}

func (t *guardTx) List(ctx context.Context, prefix string) ([]string, error) {
	if err := t.g.pre(hostapi.OpList, prefix); err != nil {
		return nil, err
	}
	return t.inner.List(ctx, prefix)
}

func (t *guardTx) ListPage(ctx context.Context, prefix, after string, limit int) ([]string, error) {
	if err := t.g.pre(hostapi.OpList, prefix); err != nil {
		return nil, err
	}
	return t.inner.ListPage(ctx, prefix, after, limit)
}

func (t *guardTx) Commit(ctx context.Context) error {
	t.mu.Lock()
	written := append([]string(nil), t.written...)
	t.mu.Unlock()
	if !t.readOnly {
		if err := t.g.faults.CheckCommit(t.g.mount, written); err != nil {
			_ = t.inner.Rollback(ctx)
			return err
		}
	}
	return t.inner.Commit(ctx)
}

func (t *guardTx) Rollback(ctx context.Context) error {
	return t.inner.Rollback(ctx)
}
