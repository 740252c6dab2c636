#!/usr/bin/env bash
# Smoke-test a Vault server binary built by build.sh.
#
# Usage: tests/goserver/smoke.sh VAULT_BIN
#
# 1. dev mode: `vault server -dev` on 127.0.0.1 with a plugin directory,
#    then `vault status` and `vault secrets list`;
# 2. a real server: file storage and a config file, `operator init` with one
#    key share, `operator unseal`, stop, start again, unseal again.
#
# Everything listens on 127.0.0.1 on free ports, lives in a temporary
# directory and is stopped (by PID) on exit. Prints start-up times.
set -euo pipefail

log() { printf 'goserver/smoke.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -eq 1 && -x "$1" ]] || die "usage: $0 VAULT_BIN (an executable)"
VAULT="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/lockstep-vault-smoke.XXXXXX")"
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

now_ms() { date +%s%3N; }

# Wait until `vault status` exits with one of the given codes
# (0 = unsealed, 2 = sealed; 1 = cannot connect yet).
wait_for_api() {
    local deadline=$(( $(date +%s) + 60 )) rc ok
    while :; do
        rc=0
        "$VAULT" status >/dev/null 2>&1 || rc=$?
        for ok in "$@"; do [[ $rc -eq $ok ]] && return 0; done
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK"/*.log >&2 || true; die "server exited early"; }
        (( $(date +%s) < deadline )) || die "server did not answer within 60 s"
        sleep 0.05
    done
}

export VAULT_FORMAT=table
unset VAULT_TOKEN VAULT_NAMESPACE

log "binary: $VAULT ($("$VAULT" version))"

# ---- 1. dev mode -----------------------------------------------------------
PORT="$(free_port)"
mkdir -p "$WORK/dev-plugins"
export VAULT_ADDR="http://127.0.0.1:$PORT"
t0=$(now_ms)
"$VAULT" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$PORT" \
    -dev-plugin-dir="$WORK/dev-plugins" >"$WORK/dev.log" 2>&1 &
SERVER_PID=$!
wait_for_api 0
log "dev server answered (unsealed) after $(( $(now_ms) - t0 )) ms"
VAULT_TOKEN=root "$VAULT" status >&2
VAULT_TOKEN=root "$VAULT" secrets list >&2
stop_server

# ---- 2. file storage + config file -----------------------------------------
PORT="$(free_port)"
CLUSTER_PORT="$(free_port)"
export VAULT_ADDR="http://127.0.0.1:$PORT"
mkdir -p "$WORK/data" "$WORK/plugins"
cat >"$WORK/config.hcl" <<EOF
storage "file" {
  path = "$WORK/data"
}
listener "tcp" {
  address         = "127.0.0.1:$PORT"
  cluster_address = "127.0.0.1:$CLUSTER_PORT"
  tls_disable     = true
}
plugin_directory = "$WORK/plugins"
api_addr         = "http://127.0.0.1:$PORT"
cluster_addr     = "http://127.0.0.1:$CLUSTER_PORT"
disable_mlock    = true
ui               = false
EOF

start_file_server() {
    t0=$(now_ms)
    "$VAULT" server -config="$WORK/config.hcl" >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for_api 2
    log "file-storage server answered (sealed) after $(( $(now_ms) - t0 )) ms"
}

start_file_server
"$VAULT" operator init -key-shares=1 -key-threshold=1 -format=json >"$WORK/init.json"
UNSEAL_KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$WORK/init.json")"
ROOT_TOKEN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$WORK/init.json")"
t0=$(now_ms)
"$VAULT" operator unseal "$UNSEAL_KEY" >/dev/null
log "unseal took $(( $(now_ms) - t0 )) ms"
VAULT_TOKEN="$ROOT_TOKEN" "$VAULT" secrets list >&2
stop_server

start_file_server
"$VAULT" status >/dev/null 2>&1 && die "restarted server should be sealed"
t0=$(now_ms)
"$VAULT" operator unseal "$UNSEAL_KEY" >/dev/null
log "unseal after restart took $(( $(now_ms) - t0 )) ms"
VAULT_TOKEN="$ROOT_TOKEN" "$VAULT" status >&2
stop_server

log "OK"
