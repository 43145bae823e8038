// Package vault is the keywarden driver for HashiCorp Vault's KV version 2
// secrets engine. Importing it registers the URL scheme "vault":
//
//	vault://secret/anthropic/prod
//	vault://secret/anthropic/prod?auth=approle&role_id_file=/etc/kw/role-id&secret_id_file=/etc/kw/secret-id
//	vault://secret/anthropic/prod?auth=kubernetes&role=keywarden
//
// The host is the KV v2 mount and the path the secret's name. Parameters:
//
//   - address: the Vault address (default: VAULT_ADDR). Either is refused
//     when it holds user info or is plain http to another machine (package
//     netrule): the token and the secrets would cross the network in clear
//     text. TLS and the rest of the client come from the standard VAULT_*
//     variables (VAULT_CACERT, VAULT_CAPATH, VAULT_CLIENT_CERT,
//     VAULT_CLIENT_KEY, VAULT_TLS_SERVER_NAME, VAULT_SKIP_VERIFY, ...), read
//     by api.DefaultConfig.
//   - namespace: a Vault Enterprise / HCP namespace (default: VAULT_NAMESPACE).
//   - auth: token (default), approle or kubernetes.
//   - token_file: with auth=token, read the token from this file (re-read on
//     every login, so a Vault Agent sink works) instead of VAULT_TOKEN.
//   - role_id or role_id_file, and secret_id_file: with auth=approle.
//   - role and k8s_token_file (default
//     /var/run/secrets/kubernetes.io/serviceaccount/token): with
//     auth=kubernetes. The token file is re-read on every login, so projected
//     service account tokens that the kubelet rotates keep working.
//   - auth_mount: where the auth method is mounted (default: approle or
//     kubernetes).
//
// # Tokens
//
// A token with a TTL is renewed by the client's LifetimeWatcher. When renewal
// fails or the token reaches its maximum TTL, the driver logs in again (with
// backoff, until Close). When Vault answers 403 and a lookup of the token
// shows it is no longer valid (revoked, expired), the driver logs in again at
// once and retries the request one time. A static VAULT_TOKEN is renewed when
// it is renewable, and never replaced.
//
// # Stages
//
// Each PutPending writes a new KV v2 version of the secret holding
// {"value": "<payload>"} ({"value_base64": ...} for a payload that is not
// UTF-8). Which version holds CURRENT, PENDING and PREVIOUS, with the
// rotation tokens, is kept in a stage document: a KV v2 secret of its own at
// <mount>/data/.keywarden/stages/<name>, written only with check-and-set
// (options.cas = the version read). KV v2 metadata has no compare-and-swap,
// so the stage document, not the secret's metadata, is the truth; Promote,
// PutPending and DiscardPending each read it, check the caller's ids, and
// write it back with cas, so of two racing promoters exactly one wins and the
// other gets Aborted. After each stage change the driver mirrors the stage
// map into the secret's custom_metadata (keywarden-current,
// keywarden-pending, keywarden-previous, keywarden-pending-token,
// keywarden-stages-rev) for people using the UI or `vault kv metadata get`;
// the mirror is best effort and never read by the driver.
//
// Readers read the stage document and then the version it names. A secret
// with no stage document is managed by hand: readers read its latest version
// as CURRENT, and PREVIOUS and PENDING do not exist. A version written by
// hand with fields other than a single "value" reads as the JSON object of
// all its fields (select one with the portable field parameter). The first
// PutPending on a hand-managed secret creates the stage document with
// CURRENT = the latest version before it writes anything, so the PENDING
// version never becomes visible as the latest. From then on hand-written
// versions are not read; deleting the stage document (vault kv metadata
// delete secret/.keywarden/stages/NAME) hands the secret back to manual
// management.
//
// # Rotation record
//
// The rotation record is a KV v2 secret at
// <mount>/data/.keywarden/records/<name>, its revision is the KV version, and
// WriteRecord writes with cas = that revision.
//
// deploy/policies/vault-reader.hcl and vault-rotator.hcl are least-privilege
// policies for these paths.
package vault

import (
	"context"
	"strings"
	"sync"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
)

// DefaultMount is the KV v2 mount used when none is given.
const DefaultMount = "secret"

// DefaultStatePrefix is where the driver keeps stage documents and rotation
// records inside the mount.
const DefaultStatePrefix = ".keywarden"

// Options configures New.
type Options struct {
	// Client is the Vault client. Nil means a client from api.DefaultConfig,
	// which reads VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN and the other VAULT_*
	// variables. The driver changes its token when it logs in.
	Client *api.Client
	// Mount is the path of the KV v2 engine; "" means DefaultMount.
	Mount string
	// Auth logs in and returns the token, e.g. AppRole, Kubernetes or
	// TokenFile. Nil means token auth with the client's token as it is.
	Auth api.AuthMethod
	// StatePrefix is the folder inside the mount holding stage documents and
	// records; "" means DefaultStatePrefix. Readers and rotators of one
	// secret must agree on it.
	StatePrefix string
}

// Store is the Vault KV v2 driver. It is safe for concurrent use.
type Store struct {
	c      *api.Client
	mount  string
	prefix string
	sess   *session

	closeOnce sync.Once
}

var _ driver.Stager = (*Store)(nil)

// New returns a driver for the KV v2 engine of opts.Mount. It logs in with
// opts.Auth (or looks up the static token, to renew it when it is renewable)
// before it returns; Close stops the token's renewal.
func New(ctx context.Context, opts Options) (*Store, error) {
	c := opts.Client
	if c == nil {
		cfg, err := defaultConfig()
		if err != nil {
			return nil, err
		}
		if c, err = api.NewClient(cfg); err != nil {
			return nil, codes.Wrap(codes.InvalidArgument, "vault: client", err)
		}
	}
	mount := strings.Trim(opts.Mount, "/")
	if mount == "" {
		mount = DefaultMount
	}
	prefix := strings.Trim(opts.StatePrefix, "/")
	if prefix == "" {
		prefix = DefaultStatePrefix
	}
	if err := checkPath("mount", mount); err != nil {
		return nil, err
	}
	if err := checkPath("state prefix", prefix); err != nil {
		return nil, err
	}
	method := opts.Auth
	if method == nil {
		method = staticToken{}
	}
	sess := newSession(c, method)
	if err := sess.start(ctx); err != nil {
		sess.close()
		return nil, err
	}
	return &Store{c: c, mount: mount, prefix: prefix, sess: sess}, nil
}

// Client returns the driver's Vault client.
func (s *Store) Client() *api.Client { return s.c }

// Close stops the renewal of the driver's token and any login in progress.
// It does not revoke the token. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(s.sess.close)
	return nil
}
