#!/usr/bin/env bash
# Lockstep's local demo: a dev server on 127.0.0.1 with the plugin
# registered by SHA-256 and mounted, driven through the ordinary CLI.
# Run it with `make demo` (which builds the plugin and the server first).
set -euo pipefail
cd "$(dirname "$0")/../.."

VAULT="$(tests/goserver/build.sh target/goserver)"
PLUGIN="${LOCKSTEP_PLUGIN_BIN:-target/debug/vault-plugin-secrets-lockstep}"
[[ -x "$PLUGIN" ]] || { echo "demo: $PLUGIN missing; run 'make build'" >&2; exit 1; }

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
"$VAULT" server -dev -dev-no-store-token -dev-root-token-id="$VAULT_TOKEN" \
    -dev-listen-address="127.0.0.1:$PORT" -config="$WORK/server.hcl" >"$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"; }
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
printf '\ndemo: done; the server is stopped and its data discarded.\n'
