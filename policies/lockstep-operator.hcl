# Security engineers who own key policy: create and tune keyrings, rotate
# and revoke them, and assign keyrings to pools. Not granted: bundles, which
# carry key material and are for sidecars only.

# Mount-wide timings and default policy.
path "lockstep/config" {
  capabilities = ["read", "update"]
}

# Keyrings: create, read metadata, change policy, delete (the keyring must
# also have deletion_allowed set), list.
path "lockstep/keys" {
  capabilities = ["list"]
}
path "lockstep/keys/+" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Manual rotation (compare-and-swap, idempotent) and emergency revocation.
path "lockstep/keys/+/rotate" {
  capabilities = ["update"]
}
path "lockstep/keys/+/revoke" {
  capabilities = ["update"]
}

# Which pools may fetch which keyrings, and in which mode.
path "lockstep/pools" {
  capabilities = ["list"]
}
path "lockstep/pools/+" {
  capabilities = ["create", "read", "update", "delete"]
}

# Fleet status and the decision record.
path "lockstep/status/+" {
  capabilities = ["read"]
}
path "lockstep/history/+" {
  capabilities = ["read"]
}
