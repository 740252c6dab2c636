// Command lockstep-sdkhost hosts a Vault/OpenBao secrets-engine plugin the
// way the OpenBao server does, using OpenBao's SDK, and exposes a small
// JSON-over-HTTP control API for integration tests. See ../../README.md.
package main

import (
	"context"
	"os"

	"lockstep/gohost/hostapi"
	"lockstep/gohost/internal/baohost"
)

func main() {
	os.Exit(hostapi.Main("lockstep-sdkhost", baohost.ServerVersion,
		func(ctx context.Context, o *hostapi.Options, faults *hostapi.Faults, logw *hostapi.LogWriter) (hostapi.Engine, error) {
			return baohost.New(ctx, o, faults, baohost.NewLogger(logw, o.LogLevel))
		}))
}
