package baohost

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/openbao/openbao/sdk/v2/helper/consts"
	"github.com/openbao/openbao/sdk/v2/helper/pluginutil"
	"github.com/openbao/openbao/sdk/v2/logical"
)

// sysView is the system view of one mount: the SDK's StaticSystemView with
// the values the contract fixes, plus the parts the server computes per
// mount (tainted while unmounting) and the plugin catalog hooks the SDK's
// NewBackendV5 / PluginRunner need (LookupPluginVersion, NewPluginClient,
// VaultVersion, MlockEnabled).
type sysView struct {
	logical.StaticSystemView
	cat     *catalog
	tainted atomic.Bool
}

var (
	_ logical.SystemView        = (*sysView)(nil)
	_ pluginutil.LookRunnerUtil = (*sysView)(nil)
)

func staticView(serverVersion string) logical.StaticSystemView {
	return logical.StaticSystemView{
		DefaultLeaseTTLVal:  768 * time.Hour,
		MaxLeaseTTLVal:      768 * time.Hour,
		TaintedVal:          false,
		CachingDisabledVal:  false,
		LocalMountVal:       false,
		ReplicationStateVal: consts.ReplicationUnknown,
		EnableMlock:         false,
		VersionString:       serverVersion,
		PluginEnvironment: &logical.PluginEnvironment{
			VaultVersion: serverVersion,
		},
	}
}

func newSysView(cat *catalog, serverVersion string) *sysView {
	return &sysView{StaticSystemView: staticView(serverVersion), cat: cat}
}

func (s *sysView) Tainted() bool { return s.tainted.Load() }

func (s *sysView) LookupPlugin(ctx context.Context, name string, typ consts.PluginType) (*pluginutil.PluginRunner, error) {
	return s.LookupPluginVersion(ctx, name, typ, "")
}

func (s *sysView) LookupPluginVersion(_ context.Context, name string, typ consts.PluginType, version string) (*pluginutil.PluginRunner, error) {
	return s.cat.lookup(name, typ, version)
}

func (s *sysView) ListVersionedPlugins(_ context.Context, typ consts.PluginType) ([]pluginutil.VersionedPlugin, error) {
	s.cat.mu.Lock()
	r := s.cat.runner
	s.cat.mu.Unlock()
	if typ != r.Type {
		return nil, nil
	}
	return []pluginutil.VersionedPlugin{{Type: r.Type.String(), Name: r.Name, Version: r.Version}}, nil
}

func (s *sysView) NewPluginClient(ctx context.Context, config pluginutil.PluginClientConfig) (pluginutil.PluginClient, error) {
	return s.cat.NewPluginClient(ctx, config)
}
