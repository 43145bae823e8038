# keywarden rotator: what `keywarden rotate` / `keywarden rotator` need to
# rotate keys kept in Vault KV v2. It includes everything the reader policy
# allows.
#
# Adapt the mount ("secret") and the key folder ("anthropic/") to your store
# URLs. Every write the driver makes carries check-and-set (options.cas), so
# the mount may set cas_required=true. The rotator never deletes or destroys
# versions and never deletes metadata: old versions age out through the
# mount's max_versions.
#
#   vault policy write keywarden-rotator deploy/policies/vault-rotator.hcl

# The key's versions: read any, write a new one (PENDING) with check-and-set.
# "create" for the first version of a new secret, "update" for later ones.
path "secret/data/anthropic/*" {
  capabilities = ["create", "read", "update"]
}

# The key's metadata: read the latest version number (the cas of the next
# write), and patch custom_metadata, where the stage map is mirrored for
# people (keywarden-current, -pending, -previous, -pending-token).
path "secret/metadata/anthropic/*" {
  capabilities = ["read", "patch"]
}

# The stage documents (CURRENT, PENDING, PREVIOUS and tokens), written only
# with check-and-set: the compare-and-swap that lets one of two racing
# promoters win.
path "secret/data/.keywarden/stages/anthropic/*" {
  capabilities = ["create", "read", "update"]
}

# The rotation records (the rotator's resumable progress), written only with
# check-and-set.
path "secret/data/.keywarden/records/anthropic/*" {
  capabilities = ["create", "read", "update"]
}
