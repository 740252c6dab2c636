#!/usr/bin/env bash
# Build the test-only Vault server binary from Go modules.
#
# Usage: tests/goserver/build.sh OUTDIR
#
# Builds OUTDIR/vault from this directory's go.mod/go.sum/main.go
# (github.com/hashicorp/vault, version pinned in go.mod, fetched through the
# Go module proxy) unless
# OUTDIR/vault.stamp already records the same inputs, so repeated runs are
# instant. Progress goes to stderr; the only thing printed on stdout is the
# path of the binary to use, so callers can do:
#
#     VAULT_BIN="$(tests/goserver/build.sh target/goserver)"
#
# If LOCKSTEP_VAULT_BIN is set, that binary is used instead: it must be an
# executable file, and nothing is built.
#
# Exits non-zero, loudly, on any error.
set -euo pipefail

log() { printf 'goserver/build.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -n "${LOCKSTEP_VAULT_BIN:-}" ]]; then
    [[ -f "$LOCKSTEP_VAULT_BIN" ]] || die "LOCKSTEP_VAULT_BIN=$LOCKSTEP_VAULT_BIN is not a file"
    [[ -x "$LOCKSTEP_VAULT_BIN" ]] || die "LOCKSTEP_VAULT_BIN=$LOCKSTEP_VAULT_BIN is not executable"
    log "using the Vault binary from LOCKSTEP_VAULT_BIN: $LOCKSTEP_VAULT_BIN (building nothing)"
    printf '%s\n' "$LOCKSTEP_VAULT_BIN"
    exit 0
fi

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 OUTDIR"

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1" || die "cannot create output directory $1"
OUT_DIR="$(cd "$1" && pwd)"
BIN="$OUT_DIR/vault"
STAMP="$OUT_DIR/vault.stamp"

command -v go >/dev/null 2>&1 || die "the go command is not on PATH (Go >= 1.25.3 is needed)"
VAULT_VERSION="$(awk '$1 == "require" && $2 == "github.com/hashicorp/vault" { print $3 }' "$SRC_DIR/go.mod")"
[[ -n "$VAULT_VERSION" ]] || die "cannot find 'require github.com/hashicorp/vault VERSION' in $SRC_DIR/go.mod"
GO_VERSION="$(go version)" || die "'go version' failed"

# The stamp covers the module files and the Go toolchain that builds them.
INPUT_HASH="$(
    cd "$SRC_DIR"
    { sha256sum go.mod go.sum main.go; printf '%s\n' "$GO_VERSION"; } | sha256sum | cut -d' ' -f1
)" || die "cannot hash go.mod, go.sum and main.go in $SRC_DIR"

up_to_date() {
    [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$INPUT_HASH" ]]
}

if up_to_date; then
    log "Vault server binary is up to date: $BIN"
    printf '%s\n' "$BIN"
    exit 0
fi

# Serialise concurrent builds into the same OUTDIR (e.g. parallel test runs).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$OUT_DIR/vault.build.lock"
    flock 9 || die "cannot lock $OUT_DIR/vault.build.lock"
    if up_to_date; then
        log "Vault server binary was built by another process: $BIN"
        printf '%s\n' "$BIN"
        exit 0
    fi
fi

log "building the Vault server from Go modules (github.com/hashicorp/vault $VAULT_VERSION) into $BIN"
log "first build on a machine takes 15 to 30 minutes on 2 cores: it downloads ~620 MB of modules (3.4 GB unpacked in the Go module cache), fills ~4 GB of Go build cache and links a ~500 MB binary (peak ~6 GB RAM); later builds reuse Go's caches (about 80 s, mostly linking)"
log "using $GO_VERSION"

TMP_BIN="$OUT_DIR/vault.tmp.$$"
trap 'rm -f "$TMP_BIN"' EXIT
rm -f "$STAMP"

start=$SECONDS
(
    cd "$SRC_DIR"
    nice -n 10 go build -mod=readonly -buildvcs=false -trimpath -o "$TMP_BIN" .
) >&2 || die "go build of the Vault server failed (see the output above)"

VERSION_OUT="$("$TMP_BIN" version 2>&1)" || die "the built binary does not run: $VERSION_OUT"
[[ "$VERSION_OUT" == "Vault $VAULT_VERSION"* ]] || die "unexpected version from the built binary: $VERSION_OUT"

mv -f "$TMP_BIN" "$BIN" || die "cannot move the binary into $BIN"
printf '%s\n' "$INPUT_HASH" > "$STAMP" || die "cannot write $STAMP"
log "built $BIN ($VERSION_OUT) in $((SECONDS - start)) s"
printf '%s\n' "$BIN"
