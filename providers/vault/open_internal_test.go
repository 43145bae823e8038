package vault

import (
	"net/url"
	"strings"
	"testing"

	"github.com/keywarden/keywarden/providers/codes"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		url  string
		want urlConfig
	}{
		{"vault://secret/anthropic/prod", urlConfig{mount: "secret", name: "anthropic/prod", auth: "token"}},
		{"vault://kv/prod?namespace=team-a/", urlConfig{mount: "kv", name: "prod", auth: "token", namespace: "team-a"}},
		{"vault://kv/prod?namespace=admin/team-a", urlConfig{mount: "kv", name: "prod", auth: "token", namespace: "admin/team-a"}},
		{"vault://secret/p?token_file=/run/token&address=https://vault:8200",
			urlConfig{mount: "secret", name: "p", auth: "token", tokenFile: "/run/token", address: "https://vault:8200"}},
		{"vault://secret/p?auth=approle&role_id=r1&secret_id_file=/s&auth_mount=approle-kw",
			urlConfig{mount: "secret", name: "p", auth: "approle", roleID: "r1", secretIDFile: "/s", authMount: "approle-kw"}},
		{"vault://secret/p?auth=approle&role_id_file=/r&secret_id_file=/s",
			urlConfig{mount: "secret", name: "p", auth: "approle", roleIDFile: "/r", secretIDFile: "/s"}},
		{"vault://secret/p?auth=kubernetes&role=kw&k8s_token_file=/t",
			urlConfig{mount: "secret", name: "p", auth: "kubernetes", role: "kw", k8sTokenFile: "/t"}},
	}
	for _, c := range cases {
		u, _ := url.Parse(c.url)
		got, err := parseURL(u)
		if err != nil {
			t.Errorf("parseURL(%s): %v", c.url, err)
			continue
		}
		if *got != c.want {
			t.Errorf("parseURL(%s) = %+v, want %+v", c.url, *got, c.want)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	cases := []struct{ url, want string }{
		{"vault:secret/x", "vault://MOUNT/NAME"},
		{"vault:///anthropic/prod", "no KV v2 mount"},
		{"vault://secret", "empty secret name"},
		{"vault://secret/", "empty secret name"},
		{"vault://secret/a//b", "empty"},
		{"vault://secret/a/../b", `".."`},
		{"vault://vault.example.com:8200/x", "address="},
		{"vault://secret/x?region=eu", "unknown parameter(s) region"},
		{"vault://secret/x?auth=ldap", "auth=\"ldap\""},
		{"vault://secret/x?auth=approle&secret_id_file=/s", "role_id or role_id_file"},
		{"vault://secret/x?auth=approle&role_id=a&role_id_file=/r&secret_id_file=/s", "role_id or role_id_file"},
		{"vault://secret/x?auth=approle&role_id=a", "secret_id_file"},
		{"vault://secret/x?auth=kubernetes", "role="},
		{"vault://secret/x?role=kw", "applies to auth=kubernetes"},
		{"vault://secret/x?auth=kubernetes&role=kw&token_file=/t", "applies to auth=token"},
		{"vault://secret/x?address=vault:8200", "not an absolute http(s) URL"},
		// netrule: the token never travels in clear text off this machine,
		// and the address holds no credentials (nor does the error).
		{"vault://secret/x?address=http://u:PASSW0RD@vault.example.com:8200", "parameter address: must not carry credentials"},
		{"vault://secret/x?address=http://vault.example.com:8200", "parameter address: would cross the network in clear text"},
		{"vault://secret/x?namespace=a b", "namespace"},
		{"vault://secret/x?namespace=a//b", "namespace"},
		{"vault://secret/x?auth_mount=../x", "auth_mount"},
	}
	for _, c := range cases {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatalf("url.Parse(%s): %v", c.url, err)
		}
		_, err = parseURL(u)
		if err != nil && strings.Contains(err.Error(), "PASSW0RD") {
			t.Errorf("parseURL(%s): the error shows the password: %v", c.url, err)
		}
		if !codes.Is(err, codes.InvalidArgument) {
			t.Errorf("parseURL(%s): %v (code %v), want InvalidArgument", c.url, err, codes.Of(err))
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "vault: ") {
			t.Errorf("parseURL(%s): %q, want a \"vault: \" error mentioning %q", c.url, err, c.want)
		}
	}
}

// TestNamespaceParam checks that the namespace reaches the client, which
// sends it as X-Vault-Namespace on every request.
func TestNamespaceParam(t *testing.T) {
	t.Setenv("VAULT_NAMESPACE", "")
	u, _ := url.Parse("vault://secret/p?namespace=admin/team-a/&address=https://vault.example.com:8200")
	c, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.client()
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.Namespace(); got != "admin/team-a" {
		t.Fatalf("client namespace %q, want admin/team-a", got)
	}
	if got := cl.Headers().Get("X-Vault-Namespace"); got != "admin/team-a" {
		t.Fatalf("X-Vault-Namespace %q, want admin/team-a", got)
	}
	if got := cl.Address(); got != "https://vault.example.com:8200" {
		t.Fatalf("address %q", got)
	}
	// Without the parameter, VAULT_NAMESPACE applies.
	t.Setenv("VAULT_NAMESPACE", "from-env")
	u, _ = url.Parse("vault://secret/p")
	c, _ = parseURL(u)
	if cl, err = c.client(); err != nil || cl.Namespace() != "from-env" {
		t.Fatalf("namespace from VAULT_NAMESPACE: %q, %v", cl.Namespace(), err)
	}
}

// TestVaultAddrChecked: VAULT_ADDR, used when the URL has no address=, is
// held to the same rule as address=: the token never crosses the network in
// clear text, and the error never shows the address's password.
func TestVaultAddrChecked(t *testing.T) {
	u, _ := url.Parse("vault://secret/p")
	c, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"http://vault.example.com:8200":        "VAULT_ADDR: would cross the network in clear text",
		"https://u:PASSW0RD@vault.example.com": "VAULT_ADDR: must not carry credentials",
		"https://vault.example.com:8200":       "",
		"http://127.0.0.1:8200":                "",
	} {
		t.Setenv("VAULT_ADDR", addr)
		_, err := c.client()
		switch {
		case want == "" && err != nil:
			t.Errorf("VAULT_ADDR=%s: %v", addr, err)
		case want != "" && (!codes.Is(err, codes.InvalidArgument) || !strings.Contains(err.Error(), want)):
			t.Errorf("VAULT_ADDR=%s: %v, want InvalidArgument containing %q", addr, err, want)
		case err != nil && strings.Contains(err.Error(), "PASSW0RD"):
			t.Errorf("VAULT_ADDR=%s: the error shows the password: %v", addr, err)
		}
	}
}
