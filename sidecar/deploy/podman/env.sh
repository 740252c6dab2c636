# Sourced by the image build and the pod tests: podman's and buildah's
# configuration and storage inside the repository's target/ directory.
# Images and containers made here never touch the machine's own storage.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
export CONTAINERS_CONF="$root/sidecar/deploy/podman/containers.conf"
state="$root/target/containers"
mkdir -p "$state"
cat > "$state/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$state/storage"
runroot = "$state/run"
CONF
export CONTAINERS_STORAGE_CONF="$state/storage.conf"
