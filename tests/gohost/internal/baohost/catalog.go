package baohost

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-secure-stdlib/base62"
	"github.com/openbao/openbao/sdk/v2/helper/consts"
	"github.com/openbao/openbao/sdk/v2/helper/pluginutil"
	"github.com/openbao/openbao/sdk/v2/logical"
	bplugin "github.com/openbao/openbao/sdk/v2/plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// catalog is the host's plugin catalog: one registered external plugin, and
// the table of running plugin processes keyed like the server's
// PluginCatalog.externalPlugins, so multiplexed plugins share one process.
// The process launch itself is the SDK's pluginutil.PluginRunner.RunConfig
// (go-plugin, protocol 5, AutoMTLS, SHA-256 SecureConfig).
type catalog struct {
	logger hclog.Logger

	mu      sync.Mutex
	runner  pluginutil.PluginRunner
	ext     map[extKey]*extPlugin
	started int
	probes  int
	procs   []*proc
	// noMultiplex: behave as a host that does not multiplex.
	noMultiplex bool
}

type proc struct {
	client *plugin.Client
	pid    int
	probe  bool
}

// extKey mirrors the server's externalPluginsKey: only plugins with an
// identical runner configuration share a process.
type extKey struct {
	name, version, command, args, env, sha string
	typ                                    consts.PluginType
}

func makeExtKey(r *pluginutil.PluginRunner) (extKey, error) {
	args, err := json.Marshal(r.Args)
	if err != nil {
		return extKey{}, err
	}
	env, err := json.Marshal(r.Env)
	if err != nil {
		return extKey{}, err
	}
	return extKey{
		name: r.Name, typ: r.Type, version: r.Version, command: r.Command,
		args: string(args), env: string(env), sha: hex.EncodeToString(r.Sha256),
	}, nil
}

type extPlugin struct {
	conns       map[string]*pluginClient
	multiplexed bool
}

var errPluginNotFound = errors.New("plugin not found in the catalog")

func newCatalog(logger hclog.Logger, runner pluginutil.PluginRunner, noMultiplex bool) *catalog {
	return &catalog{logger: logger, runner: runner, ext: map[extKey]*extPlugin{}, noMultiplex: noMultiplex}
}

// lookup is the catalog Get for (name, type, version).
func (c *catalog) lookup(name string, typ consts.PluginType, version string) (*pluginutil.PluginRunner, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookupLocked(name, typ, version)
}

func (c *catalog) lookupLocked(name string, typ consts.PluginType, version string) (*pluginutil.PluginRunner, error) {
	if name != c.runner.Name || typ != c.runner.Type || version != c.runner.Version {
		return nil, fmt.Errorf("%w: %s (type %s, version %q)", errPluginNotFound, name, typ, version)
	}
	r := c.runner
	r.Args = slices.Clone(r.Args)
	r.Env = slices.Clone(r.Env)
	r.Sha256 = slices.Clone(r.Sha256)
	return &r, nil
}

// sharedSlot lets the engine learn which pluginClient a NewBackendV5 call
// created (the SDK keeps it in an unexported field).
type sharedSlotKey struct{}

type sharedSlot struct{ pc *pluginClient }

func withSlot(ctx context.Context) (context.Context, *sharedSlot) {
	s := &sharedSlot{}
	return context.WithValue(ctx, sharedSlotKey{}, s), s
}

// NewPluginClient is what the system view's NewPluginClient (called by the
// SDK's NewBackendV5) lands in, as on the server.
func (c *catalog) NewPluginClient(ctx context.Context, config pluginutil.PluginClientConfig) (pluginutil.PluginClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if config.Name == "" {
		return nil, errors.New("no name provided for plugin")
	}
	if config.PluginType == consts.PluginTypeUnknown {
		return nil, errors.New("no plugin type provided")
	}
	runner, err := c.lookupLocked(config.Name, config.PluginType, config.Version)
	if err != nil {
		return nil, fmt.Errorf("failed to lookup plugin: %w", err)
	}
	pc, err := c.newPluginClientLocked(ctx, runner, config, false)
	if err != nil {
		return nil, err
	}
	if s, ok := ctx.Value(sharedSlotKey{}).(*sharedSlot); ok {
		s.pc = pc
	}
	return pc, nil
}

func (c *catalog) newPluginClientLocked(ctx context.Context, runner *pluginutil.PluginRunner, config pluginutil.PluginClientConfig, probe bool) (*pluginClient, error) {
	key, err := makeExtKey(runner)
	if err != nil {
		return nil, err
	}
	ext, ok := c.ext[key]
	if !ok {
		ext = &extPlugin{conns: map[string]*pluginClient{}}
		c.ext[key] = ext
	}
	id, err := base62.Random(10)
	if err != nil {
		return nil, err
	}
	pc := &pluginClient{id: id, key: key, cat: c, logger: c.logger.Named(runner.Name)}

	spawned := false
	if !ext.multiplexed || len(ext.conns) == 0 {
		c.logger.Debug("spawning a new plugin process", "plugin_name", runner.Name, "id", id)
		client, err := runner.RunConfig(ctx,
			pluginutil.PluginSets(config.PluginSets),
			pluginutil.HandshakeConfig(config.HandshakeConfig),
			pluginutil.Logger(config.Logger),
			pluginutil.MetadataMode(config.IsMetadataMode),
			pluginutil.MLock(false),
			pluginutil.AutoMTLS(config.AutoMTLS),
			pluginutil.Runner(config.Wrapper),
		)
		if err != nil {
			return nil, err
		}
		pc.client = client
		spawned = true
	} else {
		c.logger.Debug("returning existing plugin client for multiplexed plugin", "id", id)
		for _, other := range ext.conns {
			pc.client = other.client
			break
		}
		if pc.client == nil {
			return nil, errors.New("plugin client is nil")
		}
	}

	// Starts the process on first use (handshake, checksum check).
	rpcClient, err := pc.client.Client()
	if err != nil {
		if spawned {
			pc.client.Kill()
		}
		return nil, err
	}
	if rc := pc.client.ReattachConfig(); rc != nil {
		pc.pid = rc.Pid
	}
	if spawned {
		c.procs = append(c.procs, &proc{client: pc.client, pid: pc.pid, probe: probe})
		if probe {
			c.probes++
		} else {
			c.started++
		}
	}

	grpcClient, ok := rpcClient.(*plugin.GRPCClient)
	if !ok {
		if spawned {
			pc.client.Kill()
		}
		return nil, errors.New("plugin did not negotiate the gRPC protocol")
	}
	muxed := false
	if !c.noMultiplex {
		var err error
		muxed, err = pluginutil.MultiplexingSupported(ctx, grpcClient.Conn, config.Name)
		if err != nil {
			if spawned {
				pc.client.Kill()
			}
			return nil, err
		}
	}
	if c.noMultiplex {
		// A host that does not multiplex sends no multiplex id.
		pc.conn = grpcClient.Conn
	} else {
		pc.conn = &muxConn{ClientConn: grpcClient.Conn, id: id}
	}
	pc.ClientProtocol = rpcClient
	ext.conns[id] = pc
	ext.multiplexed = muxed
	pc.multiplexed = muxed
	return pc, nil
}

// cleanupLocked mirrors the server's cleanupExternalPlugin.
func (c *catalog) cleanupLocked(key extKey, id string) error {
	ext, ok := c.ext[key]
	if !ok {
		return errors.New("plugin client not found")
	}
	pc, ok := ext.conns[id]
	if !ok {
		c.logger.Warn("plugin connection not found for client", "id", id)
		return fmt.Errorf("plugin connection not found for client id: %s", id)
	}
	delete(ext.conns, id)
	c.logger.Debug("removed plugin client connection", "id", id)
	if !ext.multiplexed {
		pc.client.Kill()
		if len(ext.conns) == 0 {
			delete(c.ext, key)
		}
		c.logger.Debug("killed external plugin process", "pid", pc.pid)
	} else if len(ext.conns) == 0 || pc.client.Exited() {
		pc.client.Kill()
		delete(c.ext, key)
		c.logger.Debug("killed external multiplexed plugin process", "pid", pc.pid)
	}
	return nil
}

// reloadLocked mirrors the server's reloadExternalPlugin.
func (c *catalog) reloadLocked(key extKey, id string) error {
	ext, ok := c.ext[key]
	if !ok {
		return errors.New("plugin client not found")
	}
	if !ext.multiplexed {
		return c.cleanupLocked(key, id)
	}
	pc, ok := ext.conns[id]
	if !ok {
		return fmt.Errorf("plugin connection not found for client id: %s", id)
	}
	delete(c.ext, key)
	pc.client.Kill()
	c.logger.Debug("killed external plugin process for reload", "pid", pc.pid)
	return nil
}

func (c *catalog) counts() (started, running, probes int, pids []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids = []int{}
	for _, p := range c.procs {
		if p.probe {
			continue
		}
		if !p.client.Exited() {
			running++
			pids = append(pids, p.pid)
		}
	}
	return c.started, running, c.probes, pids
}

// killAll kills every process this catalog ever launched.
func (c *catalog) killAll() {
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	c.ext = map[extKey]*extPlugin{}
	c.mu.Unlock()
	for _, p := range procs {
		if !p.client.Exited() {
			p.client.Kill()
		}
	}
}

// probeVersion mirrors the server's getBackendRunningVersion, run when a
// plugin is registered: launch it, dispense the v5 backend, call Setup with
// an EMPTY BackendConfig (no storage, no system view, no config), ask its
// version, then kill the process without calling Cleanup.
func (c *catalog) probeVersion(ctx context.Context, runner pluginutil.PluginRunner, wrapper pluginutil.RunnerUtil, logger hclog.Logger) (logical.PluginVersion, error) {
	config := pluginutil.PluginClientConfig{
		Name:            runner.Name,
		PluginSets:      bplugin.PluginSet,
		HandshakeConfig: bplugin.HandshakeConfig,
		Logger:          logger,
		IsMetadataMode:  false,
		AutoMTLS:        true,
		Wrapper:         wrapper,
	}
	c.mu.Lock()
	pc, err := c.newPluginClientLocked(ctx, &runner, config, true)
	c.mu.Unlock()
	if err != nil {
		return logical.EmptyPluginVersion, fmt.Errorf("failed to launch plugin as backend v5: %w", err)
	}
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.cleanupLocked(pc.key, pc.id); err != nil {
			c.logger.Error("error closing plugin client", "error", err)
		}
	}()
	backend, err := bplugin.Dispense(pc.ClientProtocol, pc)
	if err != nil {
		return logical.EmptyPluginVersion, fmt.Errorf("failed to dispense plugin as backend v5: %w", err)
	}
	if err := backend.Setup(ctx, &logical.BackendConfig{}); err != nil {
		// The server ignores this error here.
		c.logger.Warn("registration probe: Setup with an empty config failed (ignored, as on the server)", "error", err)
		return logical.EmptyPluginVersion, nil
	}
	if v, ok := backend.(logical.PluginVersioner); ok {
		return v.PluginVersion(), nil
	}
	return logical.EmptyPluginVersion, nil
}

// pluginClient is one connection (one mount) to a plugin process; it is the
// pluginutil.PluginClient handed to the SDK.
type pluginClient struct {
	id          string
	key         extKey
	cat         *catalog
	logger      hclog.Logger
	pid         int
	multiplexed bool

	client *plugin.Client
	conn   grpc.ClientConnInterface

	plugin.ClientProtocol
}

var _ pluginutil.PluginClient = (*pluginClient)(nil)

func (p *pluginClient) Conn() grpc.ClientConnInterface { return p.conn }

func (p *pluginClient) Reload() error {
	p.logger.Debug("reload external plugin process")
	p.cat.mu.Lock()
	defer p.cat.mu.Unlock()
	return p.cat.reloadLocked(p.key, p.id)
}

func (p *pluginClient) Close() error {
	p.logger.Debug("cleaning up plugin client connection", "id", p.id)
	p.cat.mu.Lock()
	defer p.cat.mu.Unlock()
	return p.cat.cleanupLocked(p.key, p.id)
}

// muxConn adds the multiplexing ID to every call's gRPC metadata, like the
// server's pluginClientConn.
type muxConn struct {
	*grpc.ClientConn
	id string
}

var _ grpc.ClientConnInterface = (*muxConn)(nil)

func (d *muxConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(pluginutil.MultiplexingCtxKey, d.id))
	return d.ClientConn.Invoke(ctx, method, args, reply, opts...)
}

func (d *muxConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(pluginutil.MultiplexingCtxKey, d.id))
	return d.ClientConn.NewStream(ctx, desc, method, opts...)
}
