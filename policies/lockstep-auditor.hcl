# SREs and auditors: see which pool holds which version and every decision
# made, without being able to change anything or see key material.

path "lockstep/keys" {
  capabilities = ["list"]
}

# Keyring metadata (versions and times, never material).
path "lockstep/keys/+" {
  capabilities = ["read"]
}
path "lockstep/pools" {
  capabilities = ["list"]
}
path "lockstep/pools/+" {
  capabilities = ["read"]
}
path "lockstep/status/+" {
  capabilities = ["read"]
}
path "lockstep/history/+" {
  capabilities = ["read"]
}
path "lockstep/info" {
  capabilities = ["read"]
}
