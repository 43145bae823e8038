package vault

import (
	"context"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/keywarden/keywarden/internal/netrule"
	"github.com/keywarden/keywarden/internal/secretfile"
	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// Scheme is the URL scheme of the driver.
const Scheme = "vault"

func init() { providers.Register(Scheme, openURL) }

// urlConfig is what a store URL says.
type urlConfig struct {
	mount, name  string
	address      string
	namespace    string
	auth         string // token, approle or kubernetes
	tokenFile    string
	roleID       string
	roleIDFile   string
	secretIDFile string
	role         string
	k8sTokenFile string
	authMount    string
}

// params lists the URL parameters, and the auth methods each applies to
// ("" for all).
var params = []struct{ name, auth string }{
	{"address", ""}, {"namespace", ""}, {"auth", ""}, {"auth_mount", ""},
	{"token_file", "token"},
	{"role_id", "approle"}, {"role_id_file", "approle"}, {"secret_id_file", "approle"},
	{"role", "kubernetes"}, {"k8s_token_file", "kubernetes"},
}

// parseURL reads a vault URL; see the package documentation.
func parseURL(u *url.URL) (*urlConfig, error) {
	if u.Opaque != "" {
		return nil, codes.Errorf(codes.InvalidArgument, "vault: write the secret as vault://MOUNT/NAME, not vault:%s", u.Opaque)
	}
	c := &urlConfig{mount: u.Host, name: strings.Trim(u.Path, "/")}
	if c.mount == "" {
		return nil, codes.Errorf(codes.InvalidArgument, "vault: no KV v2 mount in the URL; write vault://MOUNT/NAME, e.g. vault://secret/anthropic/prod")
	}
	if u.Port() != "" || strings.Contains(c.mount, ":") {
		return nil, codes.Errorf(codes.InvalidArgument, "vault: the URL's host is the KV mount, not the server (%q); give the server with address=https://HOST:8200 or VAULT_ADDR", c.mount)
	}
	if err := checkPath("mount", c.mount); err != nil {
		return nil, err
	}
	if err := checkName(c.name); err != nil {
		return nil, err
	}
	q := providers.NewQuery(u.Query())
	vals := map[string]string{}
	known := make([]string, 0, len(params))
	for _, p := range params {
		known = append(known, p.name)
		if _, ok := u.Query()[p.name]; ok {
			vals[p.name] = q.String(p.name, "")
		}
	}
	if err := q.Done(known...); err != nil {
		return nil, codes.Wrap(codes.InvalidArgument, "vault", err)
	}
	c.auth = vals["auth"]
	if c.auth == "" {
		c.auth = "token"
	}
	if c.auth != "token" && c.auth != "approle" && c.auth != "kubernetes" {
		return nil, codes.Errorf(codes.InvalidArgument, "vault: parameter auth=%q (want token, approle or kubernetes)", c.auth)
	}
	for _, p := range params {
		if _, set := vals[p.name]; set && p.auth != "" && p.auth != c.auth {
			return nil, codes.Errorf(codes.InvalidArgument, "vault: parameter %s applies to auth=%s, not auth=%s", p.name, p.auth, c.auth)
		}
	}
	c.address, c.namespace, c.authMount = vals["address"], strings.Trim(vals["namespace"], "/"), strings.Trim(vals["auth_mount"], "/")
	c.tokenFile = vals["token_file"]
	c.roleID, c.roleIDFile, c.secretIDFile = vals["role_id"], vals["role_id_file"], vals["secret_id_file"]
	c.role, c.k8sTokenFile = vals["role"], vals["k8s_token_file"]
	if c.address != "" {
		if err := checkAddress("parameter address", c.address); err != nil {
			return nil, err
		}
	}
	if c.namespace != "" {
		if err := checkPath("namespace", c.namespace); err != nil {
			return nil, err
		}
	}
	if c.authMount != "" {
		if err := checkPath("auth_mount", c.authMount); err != nil {
			return nil, err
		}
	}
	switch c.auth {
	case "approle":
		if (c.roleID == "") == (c.roleIDFile == "") {
			return nil, codes.Errorf(codes.InvalidArgument, "vault: auth=approle needs one of role_id or role_id_file")
		}
		if c.secretIDFile == "" {
			return nil, codes.Errorf(codes.InvalidArgument, "vault: auth=approle needs secret_id_file (the secret ID is a credential: never put it into the URL)")
		}
	case "kubernetes":
		if c.role == "" {
			return nil, codes.Errorf(codes.InvalidArgument, "vault: auth=kubernetes needs role=ROLE (the Vault role bound to the pod's service account)")
		}
	}
	return c, nil
}

// checkAddress checks a Vault server address (from what, for the message)
// by netrule's rule for where a secret may travel: the client sends its
// token there and reads secrets back. Its errors never quote the address,
// which may hold a password.
func checkAddress(what, addr string) error {
	a, err := url.Parse(addr)
	if err != nil {
		return codes.Errorf(codes.InvalidArgument, "vault: %s is not a URL such as https://vault.example.com:8200", what)
	}
	if err := netrule.CheckSecure(a); err != nil {
		return codes.Errorf(codes.InvalidArgument, "vault: %s: %w (such as https://vault.example.com:8200, or http://127.0.0.1:8200 for a server on this machine)", what, err)
	}
	return nil
}

// authMethod builds the login of c.
func (c *urlConfig) authMethod() (api.AuthMethod, error) {
	switch c.auth {
	case "approle":
		roleID := c.roleID
		if c.roleIDFile != "" {
			b, _, err := secretfile.Read(c.roleIDFile)
			if err != nil {
				return nil, codes.Wrap(codes.FailedPrecondition, "vault: read role_id_file", err)
			}
			roleID = strings.TrimSpace(string(b))
		}
		mount := c.authMount
		if mount == "" {
			mount = "approle"
		}
		m, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromFile: c.secretIDFile}, approle.WithMountPath(mount))
		if err != nil {
			return nil, codes.Wrap(codes.InvalidArgument, "vault: approle", err)
		}
		return m, nil
	case "kubernetes":
		return Kubernetes(c.role, c.authMount, c.k8sTokenFile), nil
	}
	if c.tokenFile != "" {
		return TokenFile(c.tokenFile), nil
	}
	return nil, nil // the client's token (VAULT_TOKEN)
}

// sdkFiles are the variables naming files the Vault SDK reads itself
// (api.DefaultConfig's TLS set-up), with os.ReadFile.
var sdkFiles = []string{"VAULT_CACERT", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY"}

// defaultConfig is api.DefaultConfig (VAULT_ADDR, VAULT_CACERT, ...: its
// ReadEnvironment), after checking that the files those variables name are
// regular files: a named pipe at VAULT_CACERT blocked the open for ever.
func defaultConfig() (*api.Config, error) {
	if err := secretfile.CheckEnv(sdkFiles...); err != nil {
		return nil, codes.Wrap(codes.InvalidArgument, "vault", err)
	}
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, codes.Wrap(codes.InvalidArgument, "vault: client configuration from VAULT_* variables", cfg.Error)
	}
	return cfg, nil
}

// client builds the Vault client of c from the VAULT_* environment.
func (c *urlConfig) client() (*api.Client, error) {
	cfg, err := defaultConfig()
	if err != nil {
		return nil, err
	}
	if c.address != "" {
		cfg.Address = c.address
	} else if err := checkAddress("VAULT_ADDR", cfg.Address); err != nil {
		return nil, err
	}
	cl, err := api.NewClient(cfg) // reads VAULT_TOKEN and VAULT_NAMESPACE
	if err != nil {
		return nil, codes.Wrap(codes.InvalidArgument, "vault: client", err)
	}
	if c.namespace != "" {
		cl.SetNamespace(c.namespace)
	}
	return cl, nil
}

func openURL(ctx context.Context, u *url.URL) (driver.Reader, string, error) {
	c, err := parseURL(u)
	if err != nil {
		return nil, "", err
	}
	cl, err := c.client()
	if err != nil {
		return nil, "", err
	}
	m, err := c.authMethod()
	if err != nil {
		return nil, "", err
	}
	s, err := New(ctx, Options{Client: cl, Mount: c.mount, Auth: m})
	if err != nil {
		return nil, "", err
	}
	return s, c.name, nil
}
