// Command fixtureplugin is a tiny secrets engine built with OpenBao's SDK
// framework. It is the test fixture for the lockstep-sdkhost harness: it has
// a CRUD path, a list path, a transactional write, a periodic func, an
// Initialize func, a path that reports what the host sent it, a path that
// returns each kind of error, and a path that crashes the process.
//
// Built as-is it is served with plugin.ServeMultiplex; built with
// -ldflags "-X main.multiplex=false" it uses plugin.Serve (no multiplexing).
package main

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/openbao/openbao/sdk/v2/framework"
	"github.com/openbao/openbao/sdk/v2/helper/errutil"
	"github.com/openbao/openbao/sdk/v2/logical"
	"github.com/openbao/openbao/sdk/v2/plugin"
)

var multiplex = "true"

// Version is what the plugin reports through the PluginVersion RPC.
const Version = "v0.1.0"

func main() {
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: os.Stderr, JSONFormat: true})
	opts := &plugin.ServeOpts{BackendFactoryFunc: Factory, Logger: logger}
	var err error
	if multiplex == "false" {
		err = plugin.Serve(opts)
	} else {
		err = plugin.ServeMultiplex(opts)
	}
	if err != nil {
		logger.Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}

type backend struct {
	*framework.Backend

	config        map[string]string
	backendUUID   string
	setupWriteErr string

	mu          sync.Mutex
	periodic    int
	initCalls   int
	invalidated []string
}

// Factory is called by the SDK's plugin server on every Setup.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := &backend{config: conf.Config, backendUUID: conf.BackendUUID}
	// The server keeps a new mount's storage read-only while the backend is
	// being set up; record what a write during Setup does.
	if conf.StorageView != nil {
		err := conf.StorageView.Put(ctx, &logical.StorageEntry{Key: "setup-probe", Value: []byte("written during setup")})
		if err != nil {
			b.setupWriteErr = err.Error()
		}
	}
	b.Backend = &framework.Backend{
		Help:           "lockstep-sdkhost test fixture",
		BackendType:    logical.TypeLogical,
		RunningVersion: Version,
		PeriodicFunc:   b.periodicFunc,
		InitializeFunc: b.initialize,
		Invalidate:     b.invalidate,
		Paths: []*framework.Path{
			{
				Pattern: "kv/" + framework.GenericNameRegex("name"),
				Fields: map[string]*framework.FieldSchema{
					"name":  {Type: framework.TypeString, Description: "entry name"},
					"value": {Type: framework.TypeString, Description: "entry value"},
				},
				ExistenceCheck: b.kvExists,
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.CreateOperation: &framework.PathOperation{Callback: b.kvWrite},
					logical.UpdateOperation: &framework.PathOperation{Callback: b.kvWrite},
					logical.ReadOperation:   &framework.PathOperation{Callback: b.kvRead},
					logical.DeleteOperation: &framework.PathOperation{Callback: b.kvDelete},
				},
				HelpSynopsis:    "Store a value.",
				HelpDescription: "Stores a string value under kv/<name>.",
			},
			{
				Pattern: "kv/?$",
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.ListOperation: &framework.PathOperation{Callback: b.kvList},
				},
				HelpSynopsis: "List stored values.",
			},
			{
				Pattern: "txn/" + framework.GenericNameRegex("name"),
				Fields: map[string]*framework.FieldSchema{
					"name": {Type: framework.TypeString},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.txnWrite},
				},
				HelpSynopsis: "Write two keys in one storage transaction.",
			},
			{
				Pattern: "info",
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.ReadOperation: &framework.PathOperation{Callback: b.info},
				},
				HelpSynopsis: "Report what the host sent.",
			},
			{
				Pattern: "fail/" + framework.GenericNameRegex("kind"),
				Fields: map[string]*framework.FieldSchema{
					"kind": {Type: framework.TypeString},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.ReadOperation: &framework.PathOperation{Callback: b.fail},
				},
				HelpSynopsis: "Return an error of the given kind.",
			},
			{
				Pattern: "crash",
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.crash},
				},
				HelpSynopsis: "Exit the plugin process shortly after answering.",
			},
		},
	}
	if err := b.Backend.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

type kvEntry struct {
	Value string `json:"value"`
}

func (b *backend) kvExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	e, err := req.Storage.Get(ctx, "kv/"+d.Get("name").(string))
	if err != nil {
		return false, err
	}
	return e != nil, nil
}

func (b *backend) kvWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	value, ok := d.GetOk("value")
	if !ok {
		return logical.ErrorResponse("missing value"), nil
	}
	entry, err := logical.StorageEntryJSON("kv/"+d.Get("name").(string), kvEntry{Value: value.(string)})
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{"operation": string(req.Operation)}}, nil
}

func (b *backend) kvRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	e, err := req.Storage.Get(ctx, "kv/"+d.Get("name").(string))
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, nil
	}
	var v kvEntry
	if err := e.DecodeJSON(&v); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{"value": v.Value}}, nil
}

func (b *backend) kvDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return nil, req.Storage.Delete(ctx, "kv/"+d.Get("name").(string))
}

func (b *backend) kvList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	keys, err := req.Storage.List(ctx, "kv/")
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(keys), nil
}

func (b *backend) txnWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if _, ok := req.Storage.(logical.TransactionalStorage); !ok {
		return nil, errors.New("storage is not transactional")
	}
	rollback, err := logical.StartTxStorage(ctx, req)
	if err != nil {
		return nil, err
	}
	defer rollback()
	name := d.Get("name").(string)
	for _, k := range []string{"a", "b"} {
		if err := req.Storage.Put(ctx, &logical.StorageEntry{Key: "txn/" + name + "/" + k, Value: []byte(k)}); err != nil {
			return nil, err
		}
	}
	if err := logical.EndTxStorage(ctx, req); err != nil {
		return nil, err
	}
	return nil, nil
}

func (b *backend) info(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	sys := b.System()
	data := map[string]any{
		"config":                b.config,
		"backend_uuid":          b.backendUUID,
		"setup_write_error":     b.setupWriteErr,
		"mount_point":           req.MountPoint,
		"mount_type":            req.MountType,
		"mount_accessor":        req.MountAccessor,
		"request_id":            req.ID,
		"client_token":          req.ClientToken,
		"display_name":          req.DisplayName,
		"entity_id":             req.EntityID,
		"pid":                   os.Getpid(),
		"default_lease_ttl":     int64(sys.DefaultLeaseTTL().Seconds()),
		"max_lease_ttl":         int64(sys.MaxLeaseTTL().Seconds()),
		"tainted":               sys.Tainted(),
		"caching_disabled":      sys.CachingDisabled(),
		"local_mount":           sys.LocalMount(),
		"replication_state":     int(sys.ReplicationState()),
		"mlock_enabled":         sys.MlockEnabled(),
		"env_bao_version":       os.Getenv("BAO_VERSION"),
		"env_vault_version":     os.Getenv("VAULT_VERSION"),
		"env_automtls":          os.Getenv("BAO_PLUGIN_AUTOMTLS_ENABLED"),
		"env_metadata_mode":     os.Getenv("BAO_PLUGIN_METADATA_MODE"),
		"env_protocol_versions": os.Getenv("PLUGIN_PROTOCOL_VERSIONS"),
	}
	_, data["transactional"] = req.Storage.(logical.TransactionalStorage)
	if env, err := sys.PluginEnv(ctx); err == nil && env != nil {
		data["plugin_env_version"] = env.VaultVersion
	} else if err != nil {
		data["plugin_env_error"] = err.Error()
	}
	if v, err := sys.VaultVersion(ctx); err == nil {
		data["vault_version"] = v
	}
	b.mu.Lock()
	data["periodic_calls"] = b.periodic
	data["initialize_calls"] = b.initCalls
	data["invalidated"] = append([]string{}, b.invalidated...)
	b.mu.Unlock()
	return &logical.Response{Data: data}, nil
}

func (b *backend) fail(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	switch kind := d.Get("kind").(string); kind {
	case "permission":
		return nil, logical.ErrPermissionDenied
	case "user":
		return nil, errutil.UserError{Err: "bad input from user"}
	case "response":
		return logical.ErrorResponse("error in a response"), nil
	case "invalid":
		return logical.ErrorResponse("invalid request"), logical.ErrInvalidRequest
	case "coded":
		return nil, logical.CodedError(418, "coded teapot")
	case "unsupported-op":
		return nil, logical.ErrUnsupportedOperation
	case "internal":
		return nil, errors.New("boom")
	default:
		return logical.ErrorResponse("unknown kind %q", kind), nil
	}
}

func (b *backend) crash(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.Exit(3)
	}()
	return nil, nil
}

func (b *backend) periodicFunc(ctx context.Context, req *logical.Request) error {
	b.mu.Lock()
	b.periodic++
	n := b.periodic
	b.mu.Unlock()
	return req.Storage.Put(ctx, &logical.StorageEntry{Key: "periodic/count", Value: []byte(strconv.Itoa(n))})
}

func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	b.mu.Lock()
	b.initCalls++
	b.mu.Unlock()
	n := 0
	e, err := req.Storage.Get(ctx, "init/count")
	if err != nil {
		return err
	}
	if e != nil {
		n, _ = strconv.Atoi(string(e.Value))
	}
	return req.Storage.Put(ctx, &logical.StorageEntry{Key: "init/count", Value: []byte(strconv.Itoa(n + 1))})
}

func (b *backend) invalidate(ctx context.Context, key string) {
	b.mu.Lock()
	b.invalidated = append(b.invalidated, key)
	b.mu.Unlock()
}
