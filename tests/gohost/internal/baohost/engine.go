package baohost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/rpc"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-secure-stdlib/strutil"
	"github.com/hashicorp/go-uuid"
	semver "github.com/hashicorp/go-version"
	"github.com/openbao/openbao/sdk/v2/helper/consts"
	"github.com/openbao/openbao/sdk/v2/helper/errutil"
	"github.com/openbao/openbao/sdk/v2/helper/pluginutil"
	"github.com/openbao/openbao/sdk/v2/helper/salt"
	"github.com/openbao/openbao/sdk/v2/logical"
	"github.com/openbao/openbao/sdk/v2/physical"
	bplugin "github.com/openbao/openbao/sdk/v2/plugin"

	"lockstep/gohost/hostapi"
)

// Engine implements hostapi.Engine with the SDK this package is built on.
type Engine struct {
	opts    *hostapi.Options
	logger  hclog.Logger
	faults  *hostapi.Faults
	cat     *catalog
	sha     []byte
	version string // catalog entry version (plugin_version in Setup config)
	baseCtx context.Context
	cancel  context.CancelFunc

	mu       sync.Mutex
	mounts   map[string]*mount
	pending  map[string]bool
	storages map[string]*mountStorage
	closed   bool
	wg       sync.WaitGroup
}

var _ hostapi.Engine = (*Engine)(nil)

type mount struct {
	path, uuid, accessor, backendUUID string
	storage                           *mountStorage
	sys                               *sysView
	conf                              *logical.BackendConfig
	passthrough, allowedResp          []string

	// mu is the router's route-entry lock: requests hold it for reading,
	// reload and unmount take it for writing.
	mu sync.RWMutex
	// bmu is the v5 backend wrapper's lock, guarding the backend swap
	// during a lazy reload after the plugin process died.
	bmu     sync.RWMutex
	backend logical.Backend
	pc      *pluginClient
	canary  string
}

// New registers the plugin (hash now, optional registration probe) and
// returns the engine.
func New(ctx context.Context, o *hostapi.Options, faults *hostapi.Faults, logger hclog.Logger) (*Engine, error) {
	cmd := o.Command()
	st, err := os.Stat(cmd)
	if err != nil {
		return nil, fmt.Errorf("plugin binary: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("plugin binary %s is not an executable regular file", cmd)
	}
	sum, err := fileSHA256(cmd)
	if err != nil {
		return nil, err
	}
	runner := pluginutil.PluginRunner{
		Name:    o.Name,
		Type:    consts.PluginTypeSecrets,
		Version: o.Version,
		Command: cmd,
		Args:    []string{},
		Env:     []string{},
		Sha256:  sum,
	}
	baseCtx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		opts:     o,
		logger:   logger,
		faults:   faults,
		sha:      sum,
		baseCtx:  baseCtx,
		cancel:   cancel,
		mounts:   map[string]*mount{},
		pending:  map[string]bool{},
		storages: map[string]*mountStorage{},
	}
	e.cat = newCatalog(logger.Named("plugin-catalog"), runner, o.NoMultiplex)
	logger.Info("registered plugin", "name", o.Name, "command", cmd, "sha256", hex.EncodeToString(sum), "version", o.Version)

	if !o.SkipRegistrationProbe {
		// As the server's catalog does on `plugin register`: the entry used
		// for the probe carries no version, and the wrapper is a static
		// system view holding only the server version.
		probeRunner := runner
		probeRunner.Version = ""
		wrapper := logical.StaticSystemView{VersionString: o.ServerVersion}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Minute)
		running, err := e.cat.probeVersion(pctx, probeRunner, wrapper, logger.Named("registration-probe"))
		pcancel()
		switch {
		case err != nil:
			// Non-fatal on the server too ("Error determining plugin version").
			logger.Warn("error determining plugin version", "error", err)
		case o.Version != "" && running.Version != "" && o.Version != running.Version:
			cancel()
			return nil, fmt.Errorf("plugin version mismatch: %s reported version (%s) did not match requested version (%s)", o.Name, running.Version, o.Version)
		case o.Version == "" && running.Version != "":
			if _, err := semver.NewVersion(running.Version); err != nil {
				cancel()
				return nil, fmt.Errorf("plugin self-reported version %q is not a valid semantic version: %w", running.Version, err)
			}
			e.cat.mu.Lock()
			e.cat.runner.Version = running.Version
			e.cat.mu.Unlock()
		}
		logger.Info("registration probe done", "reported_version", running.Version)
	}
	e.cat.mu.Lock()
	e.version = e.cat.runner.Version
	e.cat.mu.Unlock()

	if o.RollbackInterval > 0 {
		e.wg.Add(1)
		go e.rollbackLoop(o.RollbackInterval)
	}
	return e, nil
}

func fileSHA256(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func (e *Engine) mountType() string { return e.opts.Name }

// Mount mirrors the server's mount sequence for an external v5 plugin.
func (e *Engine) Mount(_ context.Context, spec hostapi.MountSpec) (*hostapi.MountInfo, error) {
	path := spec.Path
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, hostapi.Errorf(http.StatusServiceUnavailable, "host is shutting down")
	}
	for existing := range e.mounts {
		if strings.HasPrefix(path, existing) || strings.HasPrefix(existing, path) {
			e.mu.Unlock()
			return nil, hostapi.Errorf(http.StatusBadRequest, "path is already in use at %s", existing)
		}
	}
	for existing := range e.pending {
		if strings.HasPrefix(path, existing) || strings.HasPrefix(existing, path) {
			e.mu.Unlock()
			return nil, hostapi.Errorf(http.StatusConflict, "a mount at %s is in progress", existing)
		}
	}
	st, ok := e.storages[path]
	if !ok {
		var err error
		st, err = newMountStorage(path, e.faults, e.logger.Named("storage"))
		if err != nil {
			e.mu.Unlock()
			return nil, err
		}
		e.storages[path] = st
	}
	e.pending[path] = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.pending, path)
		e.mu.Unlock()
	}()

	mountUUID, _ := uuid.GenerateUUID()
	backendUUID, _ := uuid.GenerateUUID()
	accUUID, _ := uuid.GenerateUUID()
	accessor := e.mountType() + "_" + accUUID[:8]

	// The Setup config: the mount's options plus plugin_name, plugin_type
	// and plugin_version, exactly the keys newLogicalBackend adds.
	conf := map[string]string{}
	for k, v := range spec.Config {
		conf[k] = v
	}
	conf["plugin_name"] = e.opts.Name
	conf["plugin_type"] = consts.PluginTypeSecrets.String()
	conf["plugin_version"] = e.version

	m := &mount{
		path:        path,
		uuid:        mountUUID,
		accessor:    accessor,
		backendUUID: backendUUID,
		storage:     st,
		sys:         newSysView(e.cat, e.opts.ServerVersion),
		passthrough: spec.PassthroughRequestHeaders,
		allowedResp: spec.AllowedResponseHeaders,
	}
	m.conf = &logical.BackendConfig{
		StorageView: st.view,
		Logger:      e.logger.Named(fmt.Sprintf("secrets.%s.%s", e.mountType(), accessor)),
		Config:      conf,
		System:      m.sys,
		BackendUUID: backendUUID,
	}

	ctx, cancel := context.WithTimeout(e.baseCtx, 2*time.Minute)
	defer cancel()

	// The server marks the new mount's view read-only while the backend is
	// built, and lifts it before Initialize.
	st.setReadOnly(logical.ErrSetupReadOnly)
	backend, pc, err := e.newBackend(ctx, m)
	if err != nil {
		st.setReadOnly(nil)
		return nil, hostapi.Errorf(http.StatusInternalServerError, "%v", err)
	}
	if bt := backend.Type(); bt != logical.TypeLogical {
		backend.Cleanup(ctx)
		st.setReadOnly(nil)
		return nil, hostapi.Errorf(http.StatusBadRequest, "unknown backend type: %q (plugin reported type %s)", e.mountType(), bt)
	}
	special := backend.SpecialPaths() // the router reads them when mounting
	m.backend, m.pc = backend, pc
	m.canary, _ = uuid.GenerateUUID()
	st.setReadOnly(nil)

	e.mu.Lock()
	e.mounts[path] = m
	e.mu.Unlock()

	// On the server the mount is already in the table when Initialize
	// runs; an Initialize error fails the request but leaves the mount.
	if err := backend.Initialize(ctx, &logical.InitializationRequest{Storage: st.view}); err != nil {
		return nil, hostapi.Errorf(http.StatusInternalServerError, "initialize failed (the mount stays, as on the server): %v", err)
	}

	info := &hostapi.MountInfo{
		Path:        path,
		Type:        backend.Type().String(),
		Accessor:    accessor,
		UUID:        mountUUID,
		BackendUUID: backendUUID,
	}
	if special != nil {
		info.SealWrapStorage = special.SealWrapStorage
		info.Unauthenticated = special.Unauthenticated
	}
	if v, ok := backend.(logical.PluginVersioner); ok {
		info.PluginVersion = v.PluginVersion().Version
	}
	if pc != nil {
		info.Multiplexed = pc.multiplexed
		info.PID = pc.pid
	}
	e.logger.Info("mounted", "path", path, "accessor", accessor, "multiplexed", info.Multiplexed, "pid", info.PID)
	return info, nil
}

// newBackend is the server's plugin Factory for a v5 plugin: NewBackendV5
// (catalog lookup, launch or reuse a process, MultiplexingSupport, dispense)
// then Setup with the mount's BackendConfig.
func (e *Engine) newBackend(ctx context.Context, m *mount) (logical.Backend, *pluginClient, error) {
	sctx, slot := withSlot(ctx)
	raw, err := bplugin.NewBackendV5(sctx, e.opts.Name, consts.PluginTypeSecrets, e.version, m.sys, m.conf)
	if err != nil {
		return nil, nil, err
	}
	if err := raw.Setup(ctx, m.conf); err != nil {
		// The server returns here without cleaning the connection up; the
		// host cleans up so no process is left behind.
		raw.Cleanup(ctx)
		return nil, nil, fmt.Errorf("setup failed: %w", err)
	}
	return raw, slot.pc, nil
}

func (e *Engine) getMount(path string) *mount {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mounts[path]
}

// Unmount mirrors the server: taint, a final rollback, Cleanup (which
// closes the connection and kills the process with its last mount). The
// storage is kept for the path, unlike the server, so a remount sees it.
func (e *Engine) Unmount(ctx context.Context, path string) error {
	m := e.getMount(path)
	if m == nil {
		return hostapi.MountNotFound(path)
	}
	m.sys.tainted.Store(true)
	rbCtx, cancel := context.WithTimeout(e.baseCtx, time.Minute)
	defer cancel()
	if err := e.rollback(rbCtx, m); err != nil {
		e.logger.Error("ignoring rollback error during unmount", "error", err, "path", path)
	}
	m.mu.Lock()
	if m.backend != nil {
		m.backend.Cleanup(rbCtx)
		m.backend = nil
		m.pc = nil
	}
	m.mu.Unlock()
	e.mu.Lock()
	delete(e.mounts, path)
	e.mu.Unlock()
	e.logger.Info("unmounted", "path", path)
	return nil
}

func (e *Engine) rollback(ctx context.Context, m *mount) error {
	req := &logical.Request{Operation: logical.RollbackOperation, Path: m.path}
	_, _, _, err := e.route(ctx, m, req, false)
	if errors.Is(err, logical.ErrUnsupportedOperation) {
		return nil
	}
	if err != nil && strings.Contains(err.Error(), logical.ErrReadOnly.Error()) {
		return nil
	}
	return err
}

func (e *Engine) rollbackLoop(every time.Duration) {
	defer e.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-e.baseCtx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		ms := make([]*mount, 0, len(e.mounts))
		for _, m := range e.mounts {
			ms = append(ms, m)
		}
		e.mu.Unlock()
		for _, m := range ms {
			ctx, cancel := context.WithTimeout(e.baseCtx, time.Minute)
			if err := e.rollback(ctx, m); err != nil {
				e.logger.Error("error rolling back", "path", m.path, "error", err)
			}
			cancel()
		}
	}
}

// Reload mirrors `plugin reload` of the mount (forceReloadBackend): drain
// requests, Cleanup with the reload context value (which kills the process,
// also when other mounts share it), build a new backend (new process, Setup),
// Initialize. Mounts that shared the killed process are reloaded the same
// way right after; on the server they would be reloaded by a plugin-wide
// reload, or lazily on their next request.
func (e *Engine) Reload(_ context.Context, path string) error {
	m := e.getMount(path)
	if m == nil {
		return hostapi.MountNotFound(path)
	}
	ctx, cancel := context.WithTimeout(e.baseCtx, 2*time.Minute)
	defer cancel()

	m.mu.RLock()
	old := m.pc
	m.mu.RUnlock()

	if err := e.forceReload(ctx, m); err != nil {
		return hostapi.Errorf(http.StatusInternalServerError, "cannot reload plugin on %q: %v", path, err)
	}
	if old == nil {
		return nil
	}
	e.mu.Lock()
	var others []*mount
	for _, o := range e.mounts {
		if o == m {
			continue
		}
		o.mu.RLock()
		if o.pc != nil && o.pc.client == old.client {
			others = append(others, o)
		}
		o.mu.RUnlock()
	}
	e.mu.Unlock()
	sort.Slice(others, func(i, j int) bool { return others[i].path < others[j].path })
	var errs []string
	for _, o := range others {
		if err := e.forceReload(ctx, o); err != nil {
			errs = append(errs, fmt.Sprintf("cannot reload plugin on %q: %v", o.path, err))
		}
	}
	if len(errs) > 0 {
		return hostapi.Errorf(http.StatusInternalServerError, "%s", strings.Join(errs, "; "))
	}
	return nil
}

func (e *Engine) forceReload(ctx context.Context, m *mount) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bmu.Lock()
	defer m.bmu.Unlock()
	return e.reloadLocked(ctx, m)
}

// reloadLocked mirrors the v5 backend's reloadBackend; callers hold the
// locks.
func (e *Engine) reloadLocked(ctx context.Context, m *mount) error {
	e.logger.Debug("reloading plugin backend", "path", m.path)
	if m.backend != nil {
		reloadCtx := context.WithValue(ctx, bplugin.ContextKeyPluginReload, "reload")
		m.backend.Cleanup(reloadCtx)
	}
	nb, pc, err := e.newBackend(ctx, m)
	if err != nil {
		return err
	}
	m.backend, m.pc = nb, pc
	m.canary, _ = uuid.GenerateUUID()
	if err := nb.Initialize(ctx, &logical.InitializationRequest{Storage: m.storage.view}); err != nil {
		return err
	}
	_ = nb.SpecialPaths()
	return nil
}

func isShutdown(err error) bool {
	return err != nil && (err.Error() == rpc.ErrShutdown.Error() || errors.Is(err, bplugin.ErrPluginShutdown))
}

// call runs fn against the backend like the server's v5 backend wrapper:
// when the plugin process has died, reload it once (new process, Setup,
// Initialize) and retry. The caller holds m.mu for reading.
func (e *Engine) call(ctx context.Context, m *mount, fn func(logical.Backend) error) error {
	m.bmu.RLock()
	canary := m.canary
	b := m.backend
	if b == nil {
		m.bmu.RUnlock()
		return logical.ErrUnsupportedPath
	}
	err := fn(b)
	m.bmu.RUnlock()
	if !isShutdown(err) {
		return err
	}
	m.bmu.Lock()
	if m.canary == canary {
		e.logger.Warn("plugin process is gone; reloading the backend", "path", m.path, "error", err)
		if rerr := e.reloadLocked(ctx, m); rerr != nil {
			m.bmu.Unlock()
			return rerr
		}
	}
	m.bmu.Unlock()
	m.bmu.RLock()
	defer m.bmu.RUnlock()
	return fn(m.backend)
}

var allowedOps = map[string]logical.Operation{
	"read":            logical.ReadOperation,
	"create":          logical.CreateOperation,
	"update":          logical.UpdateOperation,
	"patch":           logical.PatchOperation,
	"delete":          logical.DeleteOperation,
	"list":            logical.ListOperation,
	"help":            logical.HelpOperation,
	"rollback":        logical.RollbackOperation,
	"revoke":          logical.RevokeOperation,
	"renew":           logical.RenewOperation,
	"alias-lookahead": logical.AliasLookaheadOperation,
	"resolve-role":    logical.ResolveRoleOperation,
	"header":          logical.HeaderOperation,
}

// route mirrors Router.routeCommon for one mount (the caller resolved the
// mount). It restores the request fields it changes before returning.
func (e *Engine) route(ctx context.Context, m *mount, req *logical.Request, existence bool) (*logical.Response, bool, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.backend == nil {
		return logical.ErrorResponse("no handler for route %q. route entry found, but backend is nil.", req.Path), false, false, logical.ErrUnsupportedPath
	}
	if m.sys.Tainted() {
		switch req.Operation {
		case logical.RevokeOperation, logical.RollbackOperation:
		default:
			return logical.ErrorResponse("no handler for route %q. route entry is tainted.", req.Path), false, false, logical.ErrUnsupportedPath
		}
	}

	originalPath := req.Path
	clientToken := req.ClientToken
	headers := req.Headers
	req.Path = strings.TrimPrefix(req.Path, m.path)
	if req.Path == "/" {
		req.Path = ""
	}
	req.MountPoint = m.path
	req.MountType = e.mountType()
	req.MountAccessor = m.accessor
	req.SetMountRunningSha256(hex.EncodeToString(e.sha))
	req.SetMountRunningVersion(e.version)
	req.SetMountIsExternalPlugin(true)
	req.SetMountClass(consts.PluginTypeSecrets.String())
	req.Storage = m.storage.view
	// The router hands plugins a per-mount salted hash of the token, never
	// the token itself.
	req.ClientToken = salt.SaltID(m.uuid, clientToken, salt.SHA1Hash)
	req.ClientTokenRemainingUses = 0
	req.Headers = nil
	if len(m.passthrough) > 0 {
		req.Headers = filteredHeaders(headers, m.passthrough, []string{consts.AuthHeaderName})
	}
	defer func() {
		req.Path = originalPath
		req.ClientToken = clientToken
		req.Headers = headers
		req.Storage = nil
		req.MountAccessor = m.accessor
	}()

	if existence {
		var found, exists bool
		err := e.call(ctx, m, func(b logical.Backend) error {
			var err error
			found, exists, err = b.HandleExistenceCheck(ctx, req)
			return err
		})
		return nil, found, exists, err
	}
	var resp *logical.Response
	err := e.call(ctx, m, func(b logical.Backend) error {
		var err error
		resp, err = b.HandleRequest(ctx, req)
		return err
	})
	if resp != nil {
		if len(m.allowedResp) > 0 {
			resp.Headers = filteredHeaders(resp.Headers, m.allowedResp, nil)
		} else {
			resp.Headers = nil
		}
	}
	return resp, false, false, err
}

func filteredHeaders(orig map[string][]string, candidates, denied []string) map[string][]string {
	if len(candidates) == 0 {
		return nil
	}
	allowed := strutil.Difference(candidates, denied, true)
	out := map[string][]string{}
	for k, v := range orig {
		if strutil.StrListContains(allowed, strings.ToLower(k)) {
			out[k] = v
		}
	}
	return out
}

// HandleRequest runs one API request the way the server does: the
// create/update existence check of CheckToken, routing, and the HTTP
// layer's status code via logical.RespondErrorCommon.
func (e *Engine) HandleRequest(ctx context.Context, r hostapi.Request) (*hostapi.Reply, error) {
	m := e.getMount(r.Mount)
	if m == nil {
		return nil, hostapi.MountNotFound(r.Mount)
	}
	op, ok := allowedOps[strings.ToLower(r.Operation)]
	if !ok {
		return nil, hostapi.Errorf(http.StatusBadRequest, "unknown operation %q", r.Operation)
	}
	full := m.path + strings.TrimPrefix(r.Path, "/")
	if op == logical.ListOperation && !strings.HasSuffix(full, "/") {
		// The HTTP layer does this for LIST.
		full += "/"
	}
	id, _ := uuid.GenerateUUID()
	req := &logical.Request{
		ID:          id,
		Operation:   op,
		Path:        full,
		Data:        r.Data,
		ClientToken: r.ClientToken,
		DisplayName: r.DisplayName,
		EntityID:    r.EntityID,
		Headers:     r.Headers,
		Connection:  &logical.Connection{RemoteAddr: "127.0.0.1"},
	}

	reply := &hostapi.Reply{}
	if op == logical.CreateOperation || op == logical.UpdateOperation {
		_, checkFound, exists, err := e.route(ctx, m, req, true)
		switch {
		case errors.Is(err, logical.ErrUnsupportedPath):
			checkFound = false
		case errors.Is(err, logical.ErrRelativePath):
			return finish(reply, req, logical.ErrorResponse(err.Error()), logical.ErrInvalidRequest), nil
		case err == nil:
		default:
			e.logger.Error("failed to run existence check", "error", err)
			var ue errutil.UserError
			if errors.As(err, &ue) {
				return finish(reply, req, logical.ErrorResponse(err.Error()), logical.ErrInvalidRequest), nil
			}
			reply.Detail = err.Error()
			return finish(reply, req, nil, errors.New("internal error")), nil
		}
		switch {
		case !checkFound:
			req.Operation = logical.UpdateOperation
		case exists:
			req.Operation = logical.UpdateOperation
		default:
			req.Operation = logical.CreateOperation
		}
	}

	resp, _, _, err := e.route(ctx, m, req, false)
	return finish(reply, req, resp, err), nil
}

func finish(reply *hostapi.Reply, req *logical.Request, resp *logical.Response, err error) *hostapi.Reply {
	reply.Operation = string(req.Operation)
	status, rerr := logical.RespondErrorCommon(req, resp, err)
	switch {
	case status == 0 && resp == nil:
		status = http.StatusNoContent
	case status == 0:
		status = http.StatusOK
	default:
		logical.AdjustErrorStatusCode(&status, rerr)
	}
	reply.Status = status
	if rerr != nil {
		reply.Error = rerr.Error()
	}
	reply.Response = responseJSON(resp)
	return reply
}

func responseJSON(resp *logical.Response) map[string]any {
	if resp == nil {
		return nil
	}
	warnings := resp.Warnings
	if warnings == nil {
		warnings = []string{}
	}
	out := map[string]any{
		"data":     resp.Data,
		"warnings": warnings,
		"headers":  resp.Headers,
	}
	if resp.Secret != nil {
		out["secret"] = resp.Secret
	}
	if resp.Auth != nil {
		out["auth"] = resp.Auth
	}
	if resp.WrapInfo != nil {
		out["wrap_info"] = resp.WrapInfo
	}
	if resp.Redirect != "" {
		out["redirect"] = resp.Redirect
	}
	return out
}

// Invalidate calls InvalidateKey on the mount's backend.
func (e *Engine) Invalidate(ctx context.Context, path, key string) error {
	m := e.getMount(path)
	if m == nil {
		return hostapi.MountNotFound(path)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.bmu.RLock()
	defer m.bmu.RUnlock()
	if m.backend == nil {
		return hostapi.MountNotFound(path)
	}
	m.backend.InvalidateKey(ctx, key)
	return nil
}

func (e *Engine) storageFor(path string) (*mountStorage, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, ok := e.storages[path]
	if !ok {
		return nil, hostapi.Errorf(http.StatusNotFound, "no storage for mount %q (never mounted)", path)
	}
	return st, nil
}

func (e *Engine) StorageDump(ctx context.Context, path, prefix string) (map[string][]byte, error) {
	st, err := e.storageFor(path)
	if err != nil {
		return nil, err
	}
	return st.dump(ctx, prefix)
}

func (e *Engine) StoragePut(ctx context.Context, path, key string, value []byte) error {
	st, err := e.storageFor(path)
	if err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	return st.raw.Put(ctx, &physical.Entry{Key: key, Value: value})
}

func (e *Engine) StorageDelete(ctx context.Context, path, key string) error {
	st, err := e.storageFor(path)
	if err != nil {
		return err
	}
	return st.raw.Delete(ctx, key)
}

func (e *Engine) Processes() hostapi.Processes {
	started, running, probes, pids := e.cat.counts()
	return hostapi.Processes{Started: started, Running: running, Probes: probes, PIDs: pids}
}

// Shutdown cleans every mount up (as at seal: Cleanup, no rollback) and
// kills whatever process is left.
func (e *Engine) Shutdown(ctx context.Context) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	ms := make([]*mount, 0, len(e.mounts))
	for _, m := range e.mounts {
		ms = append(ms, m)
	}
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
	for _, m := range ms {
		m.mu.Lock()
		if m.backend != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m.backend.Cleanup(cctx)
			cancel()
			m.backend = nil
		}
		m.mu.Unlock()
	}
	e.cat.killAll()
	e.logger.Info("all plugin processes stopped")
}
