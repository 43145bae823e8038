# keywarden reader: what a sidecar, library or `keywarden exec` needs to read
# the CURRENT and PREVIOUS versions of keys kept in Vault KV v2.
#
# Adapt the mount ("secret") and the key folder ("anthropic/") to your store
# URLs: vault://secret/anthropic/prod reads secret/data/anthropic/prod.
# The driver keeps its stage documents under the same mount, in
# .keywarden/stages/<name>; readers need them to know which version is
# CURRENT. Nothing here allows writing, listing or reading metadata, and
# readers never touch .keywarden/records/.
#
# Token renewal (auth/token/renew-self) and lookup (auth/token/lookup-self)
# come from Vault's built-in "default" policy, which AppRole and Kubernetes
# roles attach unless token_no_default_policy is set.
#
#   vault policy write keywarden-reader deploy/policies/vault-reader.hcl

# The key's versions: the one a stage names, or the latest of a secret
# managed by hand (read with ?version=N or without).
path "secret/data/anthropic/*" {
  capabilities = ["read"]
}

# The stage documents: which version is CURRENT and PREVIOUS.
path "secret/data/.keywarden/stages/anthropic/*" {
  capabilities = ["read"]
}
