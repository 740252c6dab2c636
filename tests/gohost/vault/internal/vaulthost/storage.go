package vaulthost

import (
	"context"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical"
	"github.com/hashicorp/vault/sdk/physical/inmem"

	"lockstep/gohost/hostapi"
)

// mountStorage is one mount path's storage: Vault's in-memory physical
// backend behind guard (fault injection, the read-only window during Setup,
// the relative path check), exposed as logical storage. The Vault SDK's
// plugin protocol has no storage transactions, so "commit" faults never
// fire here.
type mountStorage struct {
	raw   physical.Backend
	guard *guardBackend
	view  logical.Storage
}

func newMountStorage(mount string, faults *hostapi.Faults, logger hclog.Logger) (*mountStorage, error) {
	raw, err := inmem.NewInmem(map[string]string{}, logger)
	if err != nil {
		return nil, err
	}
	g := &guardBackend{mount: mount, faults: faults, inner: raw}
	return &mountStorage{raw: raw, guard: g, view: logical.NewLogicalStorage(g)}, nil
}

func (s *mountStorage) setReadOnly(err error) {
	if err == nil {
		s.guard.readOnly.Store(nil)
		return
	}
	s.guard.readOnly.Store(&err)
}

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

type guardBackend struct {
	mount    string
	faults   *hostapi.Faults
	inner    physical.Backend
	readOnly atomic.Pointer[error]
}

var _ physical.Backend = (*guardBackend)(nil)

func (g *guardBackend) pre(op, key string) error {
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
