package main

import (
	kubeauth "github.com/hashicorp/vault-plugin-auth-kubernetes"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/sdk/logical"
)

// credentialBackends are the auth methods the server offers.
func credentialBackends() map[string]logical.Factory {
	return map[string]logical.Factory{"approle": approle.Factory, "kubernetes": kubeauth.Factory}
}

// authMounts are the auth methods enabled at start, each at its own name.
func authMounts() []string { return []string{"approle", "kubernetes"} }
