#!/usr/bin/env bash
# The Kubernetes control plane the tests start (etcd and kube-apiserver in
# one binary, tests/kubecp/main.go), built from the Kubernetes Go modules
# that go.mod pins, into OUTDIR/kubecp.
#
# Usage: tests/kubecp/build.sh OUTDIR. Nothing is rebuilt when OUTDIR/stamp
# already records the same inputs. A first build on a machine whose Go
# caches are cold downloads the Kubernetes modules and compiles them: plan
# for ten minutes or more on 2 cores; with the caches the Vault build left,
# about five.
set -euo pipefail

log() { printf 'kubecp/build.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -eq 1 && -n "$1" ]] || die "usage: $0 OUTDIR"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
command -v go >/dev/null 2>&1 || die "the go command is not on PATH"

inputs="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$0" | sha256sum | cut -d' ' -f1) $(go version)"
if [[ -x "$out/kubecp" && "$(cat "$out/stamp" 2>/dev/null)" == "$inputs" ]]; then
    exit 0
fi

version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")"
log "building etcd and kube-apiserver from k8s.io/kubernetes $version"
start=$SECONDS
# The version the API server reports (it says v0.0.0-master otherwise).
ldflags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitTreeState=clean"
(cd "$here" && go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$out/kubecp.partial" .)
mv "$out/kubecp.partial" "$out/kubecp"
printf '%s' "$inputs" > "$out/stamp"
log "ready: $out/kubecp ($("$out/kubecp" kube-apiserver --version), built in $((SECONDS - start)) s)"
