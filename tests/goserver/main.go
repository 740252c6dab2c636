// Command vault is a test-only build of the HashiCorp Vault server, made from
// the published github.com/hashicorp/vault module so that Lockstep's
// integration tests can run against a real Vault-compatible server.
//
// It does exactly what Vault's own main package does. Vault itself is
// licensed under BUSL-1.1; this binary is built locally for tests and is
// never shipped.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
