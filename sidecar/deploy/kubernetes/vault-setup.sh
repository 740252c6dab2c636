#!/usr/bin/env bash
# The server side of the Kubernetes example, for one pool: the pool's
# least-privilege policy (policies/lockstep-sidecar-web.hcl with the pool's
# name) and a kubernetes auth role bound to the pool's service account,
# for tokens whose audience is "vault" (the projected token in
# deployment.yaml). Run with the vault (or bao) CLI, as an operator:
#
#   POOL=checkout NAMESPACE=shop SERVICE_ACCOUNT=checkout \
#   KUBERNETES_HOST=https://kubernetes.default.svc ./vault-setup.sh
#
# VAULT_ADDR and VAULT_TOKEN (or a logged-in CLI) say which server. The
# keyrings and the pool itself are Lockstep's own (vault write
# lockstep/pools/<pool> keyrings=...). Safe to run again.
set -euo pipefail
: "${POOL:?POOL (the Lockstep pool) is required}"
: "${NAMESPACE:?NAMESPACE (of the service account) is required}"
# The app's service account (serviceaccount.yaml; the example's is
# "checkout"): named, not guessed from the pool, which may differ.
: "${SERVICE_ACCOUNT:?SERVICE_ACCOUNT (the service account of the app pod, serviceaccount.yaml) is required}"
AUTH_MOUNT="${AUTH_MOUNT:-kubernetes}"
ENGINE_MOUNT="${ENGINE_MOUNT:-lockstep}"
VAULT="${VAULT_CLI:-vault}"
here="$(cd "$(dirname "$0")" && pwd)"
policy_file="$here/../../../policies/lockstep-sidecar-web.hcl"

# Read the list whole first: `grep -q` closing the pipe early would make
# the CLI fail with SIGPIPE under pipefail, and look like "not enabled".
mounts="$("$VAULT" auth list -format=json)"
if ! grep -q "\"$AUTH_MOUNT/\"" <<<"$mounts"; then
    "$VAULT" auth enable -path="$AUTH_MOUNT" kubernetes
fi
if [ -n "${KUBERNETES_HOST:-}" ]; then
    # In a cluster, the server's own service account reviews tokens. A
    # server outside it needs KUBERNETES_CA_CERT (a file) and
    # TOKEN_REVIEWER_JWT (a file: a token of a service account bound to
    # system:auth-delegator, for the API server's own audience). Without
    # one the server reviews a login with the login's own token, which the
    # API server refuses: the pods' tokens are for the audience "vault".
    # OpenBao refuses DISABLE_LOCAL_CA_JWT without KUBERNETES_CA_CERT.
    args=("kubernetes_host=$KUBERNETES_HOST")
    if [ -n "${KUBERNETES_CA_CERT:-}" ]; then
        args+=("kubernetes_ca_cert=@$KUBERNETES_CA_CERT")
    fi
    if [ -n "${TOKEN_REVIEWER_JWT:-}" ]; then
        args+=("token_reviewer_jwt=@$TOKEN_REVIEWER_JWT")
    fi
    if [ -n "${DISABLE_LOCAL_CA_JWT:-}" ]; then
        args+=("disable_local_ca_jwt=true")
    fi
    "$VAULT" write "auth/$AUTH_MOUNT/config" "${args[@]}" >/dev/null
fi
sed -e "s|lockstep/bundle/web|$ENGINE_MOUNT/bundle/$POOL|" -e "s|(\"web\")|(\"$POOL\")|" "$policy_file" |
    "$VAULT" policy write "lockstep-sidecar-$POOL" - >/dev/null
"$VAULT" write "auth/$AUTH_MOUNT/role/lockstep-$POOL" \
    bound_service_account_names="$SERVICE_ACCOUNT" \
    bound_service_account_namespaces="$NAMESPACE" \
    audience=vault \
    token_policies="lockstep-sidecar-$POOL" \
    token_no_default_policy=true \
    token_ttl=1h token_max_ttl=24h >/dev/null
echo "pool $POOL: policy lockstep-sidecar-$POOL, role auth/$AUTH_MOUNT/role/lockstep-$POOL for $NAMESPACE/$SERVICE_ACCOUNT"
