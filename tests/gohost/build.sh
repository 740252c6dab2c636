#!/usr/bin/env bash
# Build the Lockstep SDK test hosts into OUTDIR:
#   lockstep-sdkhost         OpenBao SDK host (github.com/openbao/openbao/sdk/v2)
#   lockstep-sdkhost-vault   HashiCorp Vault SDK host (github.com/hashicorp/vault/sdk)
#   lockstep-fixtureplugin   the Go fixture plugin the host's own tests use
#
# Usage: tests/gohost/build.sh OUTDIR
#
# Skips the build when OUTDIR/.gohost-stamp matches a hash of the modules'
# go.mod/go.sum files, every .go file, this script and the Go version.
# Modules come from the Go module proxy through `go build` itself.
# Set LOCKSTEP_GOHOST_SKIP_VAULT=1 to build without the Vault SDK host.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
stamp="$out/.gohost-stamp"

if ! command -v go >/dev/null 2>&1; then
    echo "gohost: the go command is not on PATH" >&2
    exit 1
fi

bins=(lockstep-sdkhost lockstep-fixtureplugin)
with_vault=1
if [ -n "${LOCKSTEP_GOHOST_SKIP_VAULT:-}" ]; then
    with_vault=0
else
    bins+=(lockstep-sdkhost-vault)
fi

# The Vault SDK host's SDK-neutral sources come from the OpenBao one.
if [ "$with_vault" = 1 ]; then
    "$here/vault/internal/vaulthost/generate.sh"
fi

# Everything the binaries depend on, in a stable order.
hash="$(
    {
        go version
        echo "vault=$with_vault"
        cd "$here"
        find . \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name 'build.sh' \) -type f -print \
            | LC_ALL=C sort \
            | while IFS= read -r f; do
                printf '%s\n' "$f"
                sha256sum <"$f"
            done
    } | sha256sum | cut -d' ' -f1
)"

up_to_date=1
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] || up_to_date=0
for b in "${bins[@]}"; do
    [ -x "$out/$b" ] || up_to_date=0
done
if [ "$up_to_date" = 1 ]; then
    echo "gohost: up to date in $out" >&2
    exit 0
fi

rm -f "$stamp"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
start=$(date +%s)

build() { # module-dir output package [extra go build args...]
    local dir="$1" name="$2" pkg="$3"
    shift 3
    echo "gohost: building $name (go build $pkg in $dir)" >&2
    (cd "$dir" && nice -n 10 go build "$@" -o "$out/.$name.tmp" "$pkg")
    mv -f "$out/.$name.tmp" "$out/$name"
}

build "$here" lockstep-sdkhost ./cmd/lockstep-sdkhost
build "$here" lockstep-fixtureplugin ./internal/fixtureplugin
if [ "$with_vault" = 1 ]; then
    build "$here/vault" lockstep-sdkhost-vault ./cmd/lockstep-sdkhost-vault
fi

echo "$hash" >"$stamp"
echo "gohost: built ${bins[*]} in $out ($(($(date +%s) - start))s)" >&2
