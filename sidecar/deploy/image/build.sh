#!/usr/bin/env bash
# Builds the sidecar, plugin and injector images with buildah, FROM scratch, without
# a registry: the static release binaries (`make static`, musl), and
# nothing else: no shared library, no shell; a non-root numeric user and
# OCI labels. Tagged localhost/lockstep-sidecar:<version> and
# localhost/lockstep-plugin:<version> in the project's own podman storage
# (sidecar/deploy/podman/env.sh), and saved as OCI archives under
# target/image/. The same images as sidecar/deploy/image/Containerfile.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
source "$root/sidecar/deploy/podman/env.sh"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
out="$root/target/image"
mkdir -p "$out"

build() { # name binary description [cmd...]
    local name="$1" binary="$2" description="$3"
    shift 3
    local path="$root/target/x86_64-unknown-linux-musl/release/$binary"
    [ -x "$path" ] || { echo "image/build.sh: $path is missing: make static first" >&2; exit 1; }
    # Static, or the image would need libraries it does not have.
    if readelf -d "$path" | grep -q '(NEEDED)'; then
        echo "image/build.sh: $path links shared libraries: $(readelf -d "$path" | grep '(NEEDED)' | tr -s ' \n' ' ')" >&2
        exit 1
    fi
    local ctr
    ctr="$(buildah from scratch)"
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' RETURN
    buildah copy --chmod 0755 "$ctr" "$path" "/$binary" >/dev/null
    local config=(--user 65532:65532 --entrypoint "[\"/$binary\"]"
        --label "org.opencontainers.image.title=$name"
        --label "org.opencontainers.image.description=$description"
        --label "org.opencontainers.image.version=$version"
        --label "org.opencontainers.image.licenses=MIT"
        --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
    if [ "$#" -gt 0 ]; then
        config+=(--cmd "$(printf '%s\n' "$@" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')")
    fi
    buildah config "${config[@]}" "$ctr"
    buildah commit -q --rm "$ctr" "localhost/$name:$version" >/dev/null
    trap - RETURN
    rm -f "$out/$name.oci.tar"
    podman save -q --format oci-archive -o "$out/$name.oci.tar" "localhost/$name:$version"
    local size
    size="$(podman image inspect --format '{{.Size}}' "localhost/$name:$version")"
    echo "image/build.sh: localhost/$name:$version, $((size / 1024)) KiB ($out/$name.oci.tar)"
}

build lockstep-sidecar lockstep-sidecar \
    "Lockstep's per-pod sidecar: fetches its pool's keys from Vault and serves them on a Unix socket" \
    run --config /etc/lockstep/config/sidecar.toml
build lockstep-plugin vault-plugin-secrets-lockstep \
    "Lockstep: a Vault and OpenBao secrets engine that rotates keys for many pools in lockstep"
build lockstep-injector lockstep-injector \
    "Lockstep's admission webhook: adds the sidecar to pods annotated lockstep.dev/pool"
