#!/usr/bin/env bash
# Lockstep's local demo: a dev server on 127.0.0.1 with the plugin
# registered by SHA-256 and mounted, driven through the ordinary CLI.
# Run it with `make demo` (which builds the plugin and installs the server
# first). The server is OpenBao's pinned release (tests/openbao/releases.tsv)
# unless DEMO_SERVER=vault (Vault 1.21.1, built from Go modules) or
# LOCKSTEP_VAULT_BIN names a server binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ -n "${LOCKSTEP_VAULT_BIN:-}" || "${DEMO_SERVER:-openbao}" == vault ]]; then
    VAULT="$(tests/goserver/build.sh target/goserver)"
elif [[ "${DEMO_SERVER:-openbao}" == openbao ]]; then
    DEFAULT_OPENBAO="$(awk -F'\t' '!/^#/ && NF { print $1; exit }' tests/openbao/releases.tsv)"
    VAULT="$(tests/openbao/install.sh "$DEFAULT_OPENBAO" target/openbao)"
else
    echo "demo: DEMO_SERVER=$DEMO_SERVER: use openbao (the default) or vault" >&2
    exit 2
fi
printf 'demo: server %s: %s\n' "$VAULT" "$("$VAULT" version | head -1)"
PLUGIN="${LOCKSTEP_PLUGIN_BIN:-target/debug/vault-plugin-secrets-lockstep}"
SIDECAR="${LOCKSTEP_SIDECAR_BIN:-target/debug/lockstep-sidecar}"
for bin in "$PLUGIN" "$SIDECAR"; do
    [[ -x "$bin" ]] || { echo "demo: $bin missing; run 'make build'" >&2; exit 1; }
done

WORK="$(mktemp -d)"
mkdir "$WORK/plugins"
cp "$PLUGIN" "$WORK/plugins/vault-plugin-secrets-lockstep"
# A free port whose successor is free too (the dev server's cluster listener).
PORT="$(python3 - <<'PY'
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); port = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 1)); break
    except OSError:
        pass
    finally:
        a.close(); b.close()
print(port)
PY
)"
printf 'plugin_directory = "%s"\n' "$WORK/plugins" > "$WORK/server.hcl"

export VAULT_ADDR="http://127.0.0.1:$PORT" VAULT_TOKEN="demo-root-token" HOME="$WORK"
# OpenBao's CLI reads BAO_* before VAULT_*: a user's own settings must not win.
export BAO_ADDR="$VAULT_ADDR" BAO_TOKEN="$VAULT_TOKEN"
"$VAULT" server -dev -dev-no-store-token -dev-root-token-id="$VAULT_TOKEN" \
    -dev-listen-address="127.0.0.1:$PORT" -config="$WORK/server.hcl" >"$WORK/server.log" 2>&1 &
SERVER=$!
SIDECARS=()
cleanup() {
    for pid in "${SIDECARS[@]}" "$SERVER"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    "$VAULT" status >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.2
done

run() { printf '\n$ %s\n' "$*"; "$@"; }

SHA="$(sha256sum "$WORK/plugins/vault-plugin-secrets-lockstep" | cut -d' ' -f1)"
VERSION="v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
run "$VAULT" plugin register -sha256="$SHA" -version="$VERSION" \
    -command=vault-plugin-secrets-lockstep secret lockstep
run "$VAULT" secrets enable -path=lockstep -plugin-version="$VERSION" lockstep
run "$VAULT" secrets list -detailed -format=table
run "$VAULT" write lockstep/pools/checkout keyrings=session-jwt,webhook-hmac mode=sign
run "$VAULT" write lockstep/pools/edge keyrings=session-jwt mode=verify
run "$VAULT" list lockstep/pools
run "$VAULT" read lockstep/pools/edge
run "$VAULT" read lockstep/info

# A keyring: its first version signs at once.
run "$VAULT" write lockstep/keys/session-jwt type=ed25519 rotation_period=30d prepublish=1d grace_period=2d
# A sidecar of each pool fetches its bundle; the read is its acknowledgement.
run "$VAULT" read -field=revision lockstep/bundle/checkout instance=checkout-7f9c held=session-jwt:1
run "$VAULT" read -field=revision lockstep/bundle/edge instance=edge-21ab held=session-jwt:1
# A manual rotation: compare-and-swap on the latest version, idempotent by key.
run "$VAULT" write lockstep/keys/session-jwt/rotate expected_version=1 idempotency_key=change-4711 reason="demo"
run "$VAULT" write lockstep/keys/session-jwt/rotate expected_version=1 idempotency_key=change-4711 reason="demo"
printf '\n$ %s\n' "$VAULT write lockstep/keys/session-jwt/rotate expected_version=1   # a second, different rotation: 409"
"$VAULT" write lockstep/keys/session-jwt/rotate expected_version=1 || true
# Version 2 waits until every live pool holds it; status says who lacks it.
run "$VAULT" read -format=json lockstep/status/session-jwt
printf '\n$ %s\n' "(both sidecars poll again, now holding version 2: it is committed)"
"$VAULT" read -format=json lockstep/bundle/checkout instance=checkout-7f9c held=session-jwt:2 >/dev/null
"$VAULT" read -format=json lockstep/bundle/edge instance=edge-21ab held=session-jwt:2 >/dev/null
run "$VAULT" read lockstep/keys/session-jwt
run "$VAULT" read -format=json lockstep/history/session-jwt
printf '\n$ %s\n' "$VAULT write lockstep/pools/bad mode=admin   # refused, names the field"
"$VAULT" write lockstep/pools/bad mode=admin || true

# Two pools' sidecars converge on a new key. They are the instances whose
# polls were simulated above. Each sidecar authenticates with
# a token limited to its own pool's bundle (policies/lockstep-sidecar-web.hcl
# with the pool's name), long-polls its bundle, and serves a Unix socket.
printf '\n== two pools, two sidecars ==\n'
# A short activation margin so the demo does not wait 30 s after the commit.
run "$VAULT" write lockstep/config activation_margin=5s
run "$VAULT" write lockstep/keys/demo-jwt type=ed25519 rotation_period=1h prepublish=15s \
    grace_period=5m max_token_ttl=1m commit_timeout=10m
run "$VAULT" write lockstep/pools/checkout keyrings=session-jwt,webhook-hmac,demo-jwt
run "$VAULT" write lockstep/pools/edge keyrings=session-jwt,demo-jwt
for pool in checkout edge; do
    sed "s#lockstep/bundle/web#lockstep/bundle/$pool#" policies/lockstep-sidecar-web.hcl > "$WORK/$pool.hcl"
    "$VAULT" policy write "lockstep-sidecar-$pool" "$WORK/$pool.hcl" >/dev/null
    "$VAULT" token create -policy="lockstep-sidecar-$pool" -ttl=1h -field=token > "$WORK/$pool.token"
    cat > "$WORK/$pool.toml" <<TOML
pool = "$pool"
instance = "$(if [[ $pool == checkout ]]; then echo checkout-7f9c; else echo edge-21ab; fi)"
[vault]
addr = "$VAULT_ADDR"
wait_secs = 10
poll_interval_secs = 2
[auth]
method = "token"
token_file = "$WORK/$pool.token"
[socket]
path = "$WORK/$pool.sock"
TOML
    VAULT_TOKEN= "$SIDECAR" run --config "$WORK/$pool.toml" >"$WORK/$pool.log" 2>&1 &
    SIDECARS+=($!)
done
sock() { curl -sS --unix-socket "$WORK/$1.sock" -H 'X-Lockstep-Request: 1' "${@:3}" "http://localhost$2"; echo; }
signing() { sock "$1" /v1/keys/demo-jwt | python3 -c 'import json,sys; print(json.load(sys.stdin)["signing"]["version"])'; }
for pool in checkout edge; do
    for _ in $(seq 1 100); do sock "$pool" /readyz 2>/dev/null | grep -q '"ready":true' && break; sleep 0.2; done
    printf '%s signs demo-jwt with version %s\n' "$pool" "$(signing "$pool")"
done
run "$VAULT" write lockstep/keys/demo-jwt/rotate expected_version=1 reason="demo: rotate now"
printf '\nversion 2 reaches both pools within a long-poll, both acknowledge, it is committed\n'
printf 'and activates 15 s after publication, at the same instant for every pool...\n'
sleep 3
run "$VAULT" read -field=upcoming lockstep/status/demo-jwt
echo
sleep 15
for pool in checkout edge; do printf '%s now signs demo-jwt with version %s\n' "$pool" "$(signing "$pool")"; done
TOKEN_JSON="$(sock checkout /v1/jwt/demo-jwt/sign -X POST -d '{"claims":{"sub":"demo-user","exp":'"$(( $(date +%s) + 60 ))"'}}')"
printf '\ncheckout signed: %s\n' "$TOKEN_JSON"
TOKEN="$(printf '%s' "$TOKEN_JSON" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
printf 'edge verifies it: '
sock edge /v1/jwt/demo-jwt/verify -X POST -d '{"token":"'"$TOKEN"'"}'
printf '\ndemo: done; the sidecars and the server are stopped and their data discarded.\n'
