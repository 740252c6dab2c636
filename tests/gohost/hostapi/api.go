// Package hostapi holds the parts of the Lockstep SDK test hosts that do not
// depend on any Vault/OpenBao SDK: the JSON control API (types and HTTP
// handlers), the storage fault rules, log line formatting and the process
// main loop. Each host binary (OpenBao SDK, HashiCorp Vault SDK) implements
// Engine with its own SDK and hands it to Serve.
//
// This module deliberately imports the standard library only, so both host
// modules can share it without pulling each other's dependency graphs in.
package hostapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// MountSpec is the body of POST /v1/mounts.
type MountSpec struct {
	Path   string            `json:"path"`
	Config map[string]string `json:"config"`
	// Optional, like the mount tune options of the same name: request
	// headers passed through to the plugin and response headers the
	// plugin may return. Both default to none, as on the server.
	PassthroughRequestHeaders []string `json:"passthrough_request_headers,omitempty"`
	AllowedResponseHeaders    []string `json:"allowed_response_headers,omitempty"`
}

// MountInfo is the reply to POST /v1/mounts.
type MountInfo struct {
	Path          string `json:"path"`
	Multiplexed   bool   `json:"multiplexed"`
	PluginVersion string `json:"plugin_version"`
	Type          string `json:"type"`
	// Extra detail, not part of the minimal contract.
	Accessor    string `json:"accessor,omitempty"`
	UUID        string `json:"uuid,omitempty"`
	BackendUUID string `json:"backend_uuid,omitempty"`
	PID         int    `json:"pid,omitempty"`
	// The plugin's special paths, as the router reads them when mounting.
	SealWrapStorage []string `json:"seal_wrap_storage,omitempty"`
	Unauthenticated []string `json:"unauthenticated,omitempty"`
}

// Processes is the reply to GET /v1/processes.
type Processes struct {
	Started int `json:"started"`
	Running int `json:"running"`
	// Processes launched for the registration-time probe (the catalog's
	// type/version check); not counted in Started/Running.
	Probes int   `json:"probes"`
	PIDs   []int `json:"pids"`
}

// Request is the body of POST /v1/request.
type Request struct {
	Mount       string              `json:"mount"`
	Operation   string              `json:"operation"`
	Path        string              `json:"path"`
	Data        map[string]any      `json:"data"`
	DisplayName string              `json:"display_name"`
	EntityID    string              `json:"entity_id"`
	ClientToken string              `json:"client_token"`
	Headers     map[string][]string `json:"headers,omitempty"`
}

// Reply is the answer to POST /v1/request.
type Reply struct {
	Status   int            `json:"status"`
	Response map[string]any `json:"response"`
	Error    string         `json:"error"`
	// The operation the plugin finally saw (create/update are decided by
	// the existence check).
	Operation string `json:"operation,omitempty"`
	// Detail holds the real error when the server would only say
	// "internal error" (a failing existence check).
	Detail string `json:"detail,omitempty"`
}

// Engine is what a host binary implements with its SDK.
type Engine interface {
	Mount(ctx context.Context, spec MountSpec) (*MountInfo, error)
	Unmount(ctx context.Context, path string) error
	Reload(ctx context.Context, path string) error
	Processes() Processes
	HandleRequest(ctx context.Context, req Request) (*Reply, error)
	Invalidate(ctx context.Context, mount, key string) error
	StorageDump(ctx context.Context, mount, prefix string) (map[string][]byte, error)
	StoragePut(ctx context.Context, mount, key string, value []byte) error
	StorageDelete(ctx context.Context, mount, key string) error
	// Shutdown cleans up every mount and kills every plugin process.
	Shutdown(ctx context.Context)
}

// Error carries an HTTP status for the control API.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Errorf builds an *Error.
func Errorf(code int, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// StatusOf maps an error to the control API status (500 unless *Error).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return http.StatusInternalServerError
}

// NormalizeMount turns "a", "/a", "a/" into "a/".
func NormalizeMount(p string) string {
	p = strings.TrimLeft(strings.TrimSpace(p), "/")
	if p == "" {
		return ""
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}
