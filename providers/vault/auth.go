package vault

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/keywarden/keywarden/internal/secretfile"
	"github.com/keywarden/keywarden/providers/backoff"
	"github.com/keywarden/keywarden/providers/codes"
)

// DefaultK8sTokenFile is where Kubernetes mounts a pod's service account
// token.
const DefaultK8sTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// reloginBackoff spaces the logins after a failed renewal.
var reloginBackoff = backoff.Policy{Min: time.Second, Max: 30 * time.Second}

// TokenFile returns token auth reading the token from path at every login,
// e.g. the sink file of a Vault Agent, which replaces the token before it
// expires.
func TokenFile(path string) api.AuthMethod { return tokenFile{path: path} }

// Kubernetes returns Kubernetes auth for role, mounted at mount ("" means
// kubernetes), reading the service account token from tokenFile ("" means
// DefaultK8sTokenFile) at every login: the kubelet rotates projected tokens.
func Kubernetes(role, mount, tokenFile string) api.AuthMethod {
	if mount == "" {
		mount = "kubernetes"
	}
	if tokenFile == "" {
		tokenFile = DefaultK8sTokenFile
	}
	return k8sAuth{role: role, mount: mount, file: tokenFile}
}

type k8sAuth struct{ role, mount, file string }

func (a k8sAuth) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	// Read here, not by the SDK (os.ReadFile: a named pipe at the path
	// blocked every login for ever).
	jwt, err := readToken("k8s_token_file", a.file)
	if err != nil {
		return nil, err
	}
	m, err := kubernetes.NewKubernetesAuth(a.role, kubernetes.WithMountPath(a.mount), kubernetes.WithServiceAccountToken(jwt))
	if err != nil {
		return nil, codes.Wrap(codes.FailedPrecondition, "vault: kubernetes auth", err)
	}
	return m.Login(ctx, c)
}

// staticToken is token auth with the client's token as it was when the
// driver started: "logging in" looks the token up to learn whether and for
// how long to renew it.
type staticToken struct{ token string }

func (a staticToken) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	return lookup(ctx, c, a.token)
}

type tokenFile struct{ path string }

func (a tokenFile) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	tok, err := readToken("token_file", a.path)
	if err != nil {
		return nil, err
	}
	return lookup(ctx, c, tok)
}

// readToken reads the token in the file at path, named by the URL
// parameter param in errors: a regular file (secretfile), not empty.
func readToken(param, path string) (string, error) {
	b, _, err := secretfile.Read(path)
	if err != nil {
		return "", codes.Wrap(codes.FailedPrecondition, "vault: read "+param, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", codes.Errorf(codes.Unauthenticated, "vault: %s %s is empty", param, path)
	}
	return tok, nil
}

// lookup returns a login-shaped secret for token, with its TTL and
// renewability when a lookup-self is allowed. A token whose lookup is
// refused is used as it is, without renewal.
func lookup(ctx context.Context, c *api.Client, token string) (*api.Secret, error) {
	if token == "" {
		return nil, codes.Errorf(codes.Unauthenticated, "vault: no token: set VAULT_TOKEN, use token_file=PATH, or choose auth=approle or auth=kubernetes")
	}
	c.SetToken(token)
	auth := &api.SecretAuth{ClientToken: token}
	sec, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err = mapErr("look up token", err); codes.Is(err, codes.PermissionDenied) {
		return &api.Secret{Auth: auth}, nil
	} else if err != nil {
		return nil, err
	}
	if ttl, err := sec.TokenTTL(); err == nil {
		auth.LeaseDuration = int(ttl / time.Second)
	}
	if r, err := sec.TokenIsRenewable(); err == nil {
		auth.Renewable = r
	}
	return &api.Secret{Auth: auth}, nil
}

// session holds the client's token: it logs in, renews the token with a
// LifetimeWatcher, and logs in again when renewal ends.
type session struct {
	c       *api.Client
	method  api.AuthMethod
	relogin bool // whether logging in again can yield another token

	ctx    context.Context // done at close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // serialises logins; guards the fields below
	watcher *api.LifetimeWatcher
	logins  int
}

func newSession(c *api.Client, m api.AuthMethod) *session {
	ctx, cancel := context.WithCancel(context.Background())
	if st, ok := m.(staticToken); ok && st.token == "" {
		m = staticToken{token: c.Token()}
	}
	_, static := m.(staticToken)
	return &session{c: c, method: m, relogin: !static, ctx: ctx, cancel: cancel}
}

// start logs in for the first time.
func (s *session) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loginLocked(ctx)
}

// close stops renewal and waits for the session's goroutines.
func (s *session) close() {
	s.cancel()
	s.mu.Lock()
	if s.watcher != nil {
		s.watcher.Stop()
		s.watcher = nil
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// loginLocked logs in on a token-less clone of the client (a login request
// must not carry a dead token), sets the new token and watches it.
func (s *session) loginLocked(ctx context.Context) error {
	if err := s.ctx.Err(); err != nil {
		return codes.Errorf(codes.FailedPrecondition, "vault: driver closed")
	}
	lc, err := s.c.CloneWithHeaders()
	if err != nil {
		return codes.Wrap(codes.Internal, "vault: clone client", err)
	}
	lc.ClearToken()
	sec, err := s.method.Login(ctx, lc)
	if err != nil {
		return mapErr("login", err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return codes.Errorf(codes.Unauthenticated, "vault: login returned no token")
	}
	s.c.SetToken(sec.Auth.ClientToken)
	s.logins++
	if s.watcher != nil {
		s.watcher.Stop()
		s.watcher = nil
	}
	if sec.Auth.LeaseDuration <= 0 {
		return nil // a token without TTL (root, or lookup refused)
	}
	behavior := api.RenewBehaviorErrorOnErrors
	if !sec.Auth.Renewable {
		behavior = api.RenewBehaviorRenewDisabled // wait for the end of the TTL
	}
	w, err := s.c.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec, RenewBehavior: behavior})
	if err != nil {
		return codes.Wrap(codes.Internal, "vault: token watcher", err)
	}
	s.watcher = w
	s.wg.Add(2)
	go func() { defer s.wg.Done(); w.Start() }()
	go func() { defer s.wg.Done(); s.await(w) }()
	return nil
}

// await waits until w ends (renewal failed, or the token is about to reach
// its maximum TTL) and then logs in again, with backoff, unless another
// login replaced w meanwhile or the session closed.
func (s *session) await(w *api.LifetimeWatcher) {
	select {
	case <-s.ctx.Done():
		return
	case <-w.DoneCh():
	}
	if !s.relogin {
		return
	}
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		if s.watcher != w || s.ctx.Err() != nil {
			s.mu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
		err := s.loginLocked(ctx)
		cancel()
		s.mu.Unlock()
		if err == nil {
			return
		}
		if backoff.Sleep(s.ctx, reloginBackoff.Delay(attempt)) != nil {
			return
		}
	}
}

// reloginAfterDenied is called after a request made with token got 403. When
// the token is no longer valid (its lookup is refused too) and no other
// login replaced it meanwhile, it logs in again. It reports whether a retry
// of the request can succeed.
func (s *session) reloginAfterDenied(ctx context.Context, token string) bool {
	if !s.relogin {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c.Token() != token {
		return true // another login already replaced the token
	}
	if _, err := s.c.Auth().Token().LookupSelfWithContext(ctx); !codes.Is(mapErr("", err), codes.PermissionDenied) {
		return false // the token is valid: the 403 is the policy's answer
	}
	return s.loginLocked(ctx) == nil
}

// loginCount returns the number of successful logins so far.
func (s *session) loginCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}
