#!/usr/bin/env bash
# Helm's command-line tool, built from its Go module (the version go.mod
# pins), and the official Vault chart, fetched through the Go module proxy
# and checked against its recorded hash, under OUTDIR:
#
#   OUTDIR/helm                the helm tool (`helm lint`, `helm template`)
#   OUTDIR/charts/vault        hashicorp/vault-helm at VAULT_CHART_VERSION
#
# Usage: tests/helm/build.sh OUTDIR. Nothing is rebuilt when OUTDIR/stamp
# already records the same inputs.
set -euo pipefail

VAULT_CHART=github.com/hashicorp/vault-helm
VAULT_CHART_VERSION=v0.34.1
VAULT_CHART_SUM="h1:2uoVkbS+64x13G/92mbAPDPSvH6APcV7+jrQbhH+NqU="

log() { printf 'helm/build.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 OUTDIR"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
command -v go >/dev/null 2>&1 || die "the go command is not on PATH"

inputs="$(cat "$here/go.mod" "$here/go.sum" "$here/tools.go" "$0" | sha256sum | cut -d' ' -f1) $(go version)"
if [[ -x "$out/helm" && -f "$out/charts/vault/Chart.yaml" && "$(cat "$out/stamp" 2>/dev/null)" == "$inputs" ]]; then
    exit 0
fi

log "building helm from $(grep -E '^require|helm.sh/helm' "$here/go.mod" | head -1) (a few minutes the first time)"
(cd "$here" && go build -trimpath -o "$out/helm.partial" helm.sh/helm/v4/cmd/helm)
mv "$out/helm.partial" "$out/helm"

log "fetching $VAULT_CHART@$VAULT_CHART_VERSION"
download="$(cd "$here" && go mod download -json "$VAULT_CHART@$VAULT_CHART_VERSION")"
sum="$(printf '%s' "$download" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Sum",""))')"
dir="$(printf '%s' "$download" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("Dir",""))')"
[[ "$sum" == "$VAULT_CHART_SUM" ]] || die "$VAULT_CHART@$VAULT_CHART_VERSION has hash $sum, not $VAULT_CHART_SUM"
[[ -f "$dir/Chart.yaml" ]] || die "no Chart.yaml in $dir"
rm -rf "$out/charts/vault"
mkdir -p "$out/charts"
cp -r "$dir" "$out/charts/vault"
chmod -R u+w "$out/charts/vault"
printf '%s' "$inputs" > "$out/stamp"
log "ready: $out/helm, $out/charts/vault"
