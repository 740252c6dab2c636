// Package baohost is the OpenBao-SDK implementation of the Lockstep test
// host: it launches and drives a secrets-engine plugin with the SDK code the
// OpenBao server uses (pluginutil runner, plugin.NewBackendV5, the gRPC
// backend client, logical.RespondErrorCommon), and mirrors the server's
// mount, routing, reload and unmount sequences around it.
//
// engine.go, catalog.go, sysview.go and logger.go are SDK-neutral: the
// HashiCorp Vault SDK host (../../vault/internal/vaulthost) is generated
// from them by rewriting the SDK's import path. storage.go and this file
// are the OpenBao-specific parts.
package baohost

import "github.com/openbao/openbao/sdk/v2/logical"

// ServerVersion is the default version the system view reports.
const ServerVersion = "v2.6.2"

// OpenBao's extended system view (the Vault SDK has none).
var _ logical.ExtendedSystemView = (*sysView)(nil)
