# The sidecars of one pool ("web"): fetch that pool's bundle and nothing
# else. Copy this file per pool and change the pool name; bind it to the
# pool's Kubernetes service account (or AppRole) role.

# The bundle is also how a sidecar acknowledges what it holds, so "read"
# is all it needs.
path "lockstep/bundle/web" {
  capabilities = ["read"]
}

# Renew its own token before it expires.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
