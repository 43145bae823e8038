package vault_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
)

// tokenReviewer is the one Kubernetes API endpoint Vault's Kubernetes auth
// calls: POST /apis/authentication.k8s.io/v1/tokenreviews, answering as the
// API server does for the service account default/keywarden. Tokens it
// was told about are valid; others are not.
type tokenReviewer struct {
	mu    sync.Mutex
	valid map[string]bool
}

func (tr *tokenReviewer) allow(jwt string, ok bool) {
	tr.mu.Lock()
	tr.valid[jwt] = ok
	tr.mu.Unlock()
}

func (tr *tokenReviewer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Spec struct {
			Token string `json:"token"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tr.mu.Lock()
	ok := tr.valid[req.Spec.Token]
	tr.mu.Unlock()
	status := map[string]any{"authenticated": false}
	if ok {
		status = map[string]any{"authenticated": true, "user": map[string]any{
			"username": "system:serviceaccount:default:keywarden", "uid": "uid-keywarden",
		}}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status,
	})
}

// saToken returns a service account JWT for default/keywarden, signed with
// a throwaway ES256 key (Vault verifies it through the token review).
func saToken(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "ES256", "typ": "JWT"}) + "." + enc(map[string]string{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:default:keywarden",
		"kubernetes.io/serviceaccount/namespace": "default",
		"kubernetes.io/serviceaccount/service-account.name": "keywarden",
		"kubernetes.io/serviceaccount/service-account.uid":  "uid-keywarden",
		"jti": token(),
	})
	h := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestKubernetesLogin logs in with Vault's real Kubernetes auth method,
// which reviews the pod's token with a token review endpoint of the test,
// and logs in again with the rotated token file after its Vault token dies.
func TestKubernetesLogin(t *testing.T) {
	writePolicies(t)
	ctx := context.Background()
	root := vaulttest.Client(t)
	auths, err := root.Sys().ListAuthWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := auths["kubernetes/"]; !ok {
		t.Fatalf("the Vault server has no kubernetes/ auth mount (auth mounts: %v)", len(auths))
	}
	tr := &tokenReviewer{valid: map[string]bool{}}
	k8s := httptest.NewTLSServer(tr)
	defer k8s.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k8s.Certificate().Raw})
	if _, err := root.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host": k8s.URL, "kubernetes_ca_cert": string(ca),
		"token_reviewer_jwt": "reviewer-token", "disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatalf("configure kubernetes auth: %v", err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "auth/kubernetes/role/kwt-reader", map[string]any{
		"bound_service_account_names": "keywarden", "bound_service_account_namespaces": "default",
		"token_policies": "keywarden-reader", "token_ttl": "1h",
	}); err != nil {
		t.Fatalf("create kubernetes role: %v", err)
	}

	name := uniqueName("k8s")
	val := fakeKey()
	rotate(t, newStore(t, nil, vault.Options{}), name, "", val)

	jwt1 := saToken(t)
	tr.allow(jwt1, true)
	file := writeFile(t, "token", jwt1)
	addr, caFile, _ := vaulttest.Start(t)
	t.Setenv("VAULT_CACERT", caFile)
	t.Setenv("VAULT_TOKEN", "")
	d, _, _, err := providers.OpenDriver(ctx, fmt.Sprintf("vault://secret/%s?auth=kubernetes&role=kwt-reader&k8s_token_file=%s&address=%s",
		name, url.QueryEscape(file), url.QueryEscape(addr)))
	if err != nil {
		t.Fatalf("OpenDriver(auth=kubernetes): %v", err)
	}
	defer d.Close()
	s := d.(*vault.Store)
	wantCurrent(t, s, name, val)

	// The kubelet rotates the projected token and the old one stops being
	// valid; the Vault token is revoked. The driver logs in with the new file.
	jwt2 := saToken(t)
	tr.allow(jwt2, true)
	tr.allow(jwt1, false)
	if err := os.WriteFile(file, []byte(jwt2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := root.Auth().Token().RevokeTreeWithContext(ctx, s.Client().Token()); err != nil {
		t.Fatal(err)
	}
	wantCurrent(t, s, name, val)
	if n := vault.LoginCount(s); n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}
}

// TestKubernetesTokenFileNotRegular: a named pipe at k8s_token_file (no
// writer ever comes) or a directory fails the login at once, naming the
// file's kind; the SDK's own read of the path blocked every login for ever
// on the pipe. An empty file is refused before Vault is asked.
func TestKubernetesTokenFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := writeFile(t, "empty", "\n")
	c, err := api.NewClient(&api.Config{Address: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		code codes.Code
		want string
	}{
		{fifo, codes.FailedPrecondition, "named pipe"},
		{dir, codes.FailedPrecondition, "directory"},
		{empty, codes.Unauthenticated, "is empty"},
	} {
		done := make(chan error, 1)
		go func() { _, err := vault.Kubernetes("r", "", tc.path).Login(context.Background(), c); done <- err }()
		select {
		case err := <-done:
			if !codes.Is(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("login with k8s_token_file %s: %v; want %v naming %q", tc.path, err, tc.code, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("login with a named pipe at k8s_token_file still blocked after 10s")
		}
	}
}
