// Package vaulthost is the HashiCorp-Vault-SDK implementation of the
// Lockstep test host: the same host as ../../../internal/baohost (which has
// the commentary), built on the SDK code the Vault server uses.
//
// The SDK-neutral files (zz_engine.go, zz_catalog.go, zz_sysview.go,
// zz_logger.go) are generated from baohost by generate.sh and not kept in
// version control; build.sh and the e2e tests run it. storage.go and this
// file are the Vault-specific parts.
package vaulthost

//go:generate ./generate.sh

// ServerVersion is the default version the system view reports.
const ServerVersion = "1.21.4"
