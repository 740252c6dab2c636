// Command lockstep-sdkhost-vault is lockstep-sdkhost built on HashiCorp
// Vault's SDK (github.com/hashicorp/vault/sdk) instead of OpenBao's: it hosts a
// secrets-engine plugin the way the Vault server does and serves the same
// control API. See ../../../README.md.
package main

import (
	"context"
	"os"

	"lockstep/gohost/hostapi"
	"lockstep/gohost/vault/internal/vaulthost"
)

func main() {
	os.Exit(hostapi.Main("lockstep-sdkhost-vault", vaulthost.ServerVersion,
		func(ctx context.Context, o *hostapi.Options, faults *hostapi.Faults, logw *hostapi.LogWriter) (hostapi.Engine, error) {
			return vaulthost.New(ctx, o, faults, vaulthost.NewLogger(logw, o.LogLevel))
		}))
}
