package vault_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/keywarden/keywarden/providers"
	"github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/vault"
	"github.com/keywarden/keywarden/providers/vault/vaulttest"
)

// rotate puts value as PENDING and promotes it over currentID.
func rotate(t *testing.T, s driver.Stager, name, currentID string, value []byte) *driver.Version {
	t.Helper()
	ctx := context.Background()
	v, err := s.PutPending(ctx, name, token(), value)
	if err != nil {
		t.Fatalf("PutPending(%s): %v", name, err)
	}
	if err := s.Promote(ctx, name, v.ID, currentID); err != nil {
		t.Fatalf("Promote(%s): %v", name, err)
	}
	return v
}

func wantCurrent(t *testing.T, s driver.Reader, name string, want []byte) {
	t.Helper()
	v, err := s.Read(context.Background(), name, driver.Current)
	if err != nil {
		t.Fatalf("Read(%s, CURRENT): %v", name, err)
	}
	if string(v.Value) != string(want) {
		t.Fatalf("Read(%s, CURRENT): key %s, want %s", name, fingerprint(v.Value), fingerprint(want))
	}
}

// TestTokenAuthWithPolicies runs a rotator and a reader on tokens holding
// only the policies of deploy/policies.
func TestTokenAuthWithPolicies(t *testing.T) {
	writePolicies(t)
	ctx := context.Background()
	rot := newStore(t, clientWith(t, tokenWith(t, "1h", "keywarden-rotator")), vault.Options{})
	rd := newStore(t, clientWith(t, tokenWith(t, "1h", "keywarden-reader")), vault.Options{})
	name := uniqueName("policies")

	// A rotation under the rotator policy, record included.
	rec, err := rot.WriteRecord(ctx, name, "", map[string]string{"phase": "created"})
	if err != nil {
		t.Fatalf("WriteRecord as rotator: %v", err)
	}
	a, b := fakeKey(), fakeKey()
	va := rotate(t, rot, name, "", a)
	vb := rotate(t, rot, name, va.ID, b)
	if _, err := rot.WriteRecord(ctx, name, rec.Rev, map[string]string{"phase": "done"}); err != nil {
		t.Fatalf("WriteRecord as rotator: %v", err)
	}

	// The reader reads both stages and can do nothing else.
	wantCurrent(t, rd, name, b)
	if p, err := rd.Read(ctx, name, driver.Previous); err != nil || p.ID != va.ID {
		t.Fatalf("reader Read(PREVIOUS) = %v, %v; want version %s", p, err, va.ID)
	}
	_, err = rd.PutPending(ctx, name, token(), fakeKey())
	if !codes.Is(err, codes.PermissionDenied) {
		t.Fatalf("reader PutPending: %v (code %v), want PermissionDenied", err, codes.Of(err))
	}
	if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "vault: ") {
		t.Errorf("error %q: want one line starting with \"vault: \"", err)
	}
	if _, err := rd.ReadRecord(ctx, name); !codes.Is(err, codes.PermissionDenied) {
		t.Fatalf("reader ReadRecord: %v, want PermissionDenied", err)
	}
	vc, err := rot.PutPending(ctx, name, token(), fakeKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Promote(ctx, name, vc.ID, vb.ID); !codes.Is(err, codes.PermissionDenied) {
		t.Fatalf("reader Promote: %v, want PermissionDenied", err)
	}
	wantCurrent(t, rd, name, b)
	if err := rot.DiscardPending(ctx, name, vc.ID); err != nil {
		t.Fatal(err)
	}
	// The reader reads a secret managed by hand (no stage document).
	hand := uniqueName("policies-hand")
	handVal := fakeKey()
	if err := putByHand(ctx, vaulttest.Client(t), hand, handVal); err != nil {
		t.Fatal(err)
	}
	wantCurrent(t, rd, hand, handVal)
	// Neither policy reaches outside anthropic/.
	if _, err := rot.PutPending(ctx, "other/kwt-"+token(), token(), fakeKey()); !codes.Is(err, codes.PermissionDenied) {
		t.Fatalf("rotator PutPending outside its folder: %v, want PermissionDenied", err)
	}

	// The rotator mirrored the stage map into custom_metadata.
	md, err := vaulttest.Client(t).KVv2(vault.DefaultMount).GetMetadata(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"keywarden-current": vb.ID, "keywarden-previous": va.ID}
	for k, v := range want {
		if md.CustomMetadata[k] != v {
			t.Errorf("custom_metadata[%s] = %v, want %v", k, md.CustomMetadata[k], v)
		}
	}
	if _, ok := md.CustomMetadata["keywarden-pending"]; ok {
		t.Errorf("custom_metadata still names a PENDING version after the promotion: %v", md.CustomMetadata)
	}
}

// TestOpenURLTokenFile opens a reader through providers with the standard
// VAULT_* variables and a token file.
func TestOpenURLTokenFile(t *testing.T) {
	writePolicies(t)
	addr, ca, _ := vaulttest.Start(t)
	name := uniqueName("url")
	val := fakeKey()
	rotate(t, newStore(t, nil, vault.Options{}), name, "", val)

	t.Setenv("VAULT_ADDR", "https://127.0.0.1:1") // overridden by address=
	t.Setenv("VAULT_CACERT", ca)
	t.Setenv("VAULT_TOKEN", "")
	file := writeFile(t, "token", tokenWith(t, "1h", "keywarden-reader")+"\n")
	u := fmt.Sprintf("vault://secret/%s?token_file=%s&address=%s", name, url.QueryEscape(file), url.QueryEscape(addr))
	d, got, _, err := providers.OpenDriver(context.Background(), u)
	if err != nil {
		t.Fatalf("OpenDriver: %v", err)
	}
	defer d.Close()
	if got != name {
		t.Fatalf("name %q, want %q", got, name)
	}
	wantCurrent(t, d, name, val)

	// Without a token there is no login.
	_, _, _, err = providers.OpenDriver(context.Background(), fmt.Sprintf("vault://secret/%s?address=%s", name, url.QueryEscape(addr)))
	if !codes.Is(err, codes.Unauthenticated) {
		t.Fatalf("OpenDriver without a token: %v (code %v), want Unauthenticated", err, codes.Of(err))
	}
	// A server whose CA is not trusted is a configuration error.
	t.Setenv("VAULT_CACERT", "")
	t.Setenv("VAULT_TOKEN", "hvs.bogus")
	_, _, _, err = providers.OpenDriver(context.Background(), fmt.Sprintf("vault://secret/%s?address=%s", name, url.QueryEscape(addr)))
	if !codes.Is(err, codes.FailedPrecondition) {
		t.Fatalf("OpenDriver with an untrusted CA: %v (code %v), want FailedPrecondition", err, codes.Of(err))
	}
}

// appRole creates an AppRole role with the rotator policy and the given
// token TTLs, and returns files holding its role ID and a secret ID.
func appRole(t *testing.T, ttl, maxTTL string) (roleIDFile, secretIDFile string) {
	t.Helper()
	writePolicies(t)
	ctx := context.Background()
	root := vaulttest.Client(t)
	role := "kwt-" + strings.ReplaceAll(token()[:8], "-", "")
	if _, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/"+role, map[string]any{
		"token_policies": "keywarden-rotator", "token_ttl": ttl, "token_max_ttl": maxTTL,
	}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	rid, err := root.Logical().ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().WriteWithContext(ctx, "auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "role-id", rid.Data["role_id"].(string)), writeFile(t, "secret-id", sid.Data["secret_id"].(string))
}

// openAppRole opens a driver through its URL with AppRole auth.
func openAppRole(t *testing.T, name, roleIDFile, secretIDFile string) *vault.Store {
	t.Helper()
	addr, ca, _ := vaulttest.Start(t)
	t.Setenv("VAULT_CACERT", ca)
	t.Setenv("VAULT_TOKEN", "")
	u := fmt.Sprintf("vault://secret/%s?auth=approle&role_id_file=%s&secret_id_file=%s&address=%s",
		name, url.QueryEscape(roleIDFile), url.QueryEscape(secretIDFile), url.QueryEscape(addr))
	st, got, err := providers.OpenStager(context.Background(), u)
	if err != nil {
		t.Fatalf("OpenStager(approle): %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if got != name {
		t.Fatalf("name %q, want %q", got, name)
	}
	return st.(*vault.Store)
}

// newAppRoleStore opens a driver with AppRole auth through vault.New, for
// parallel tests (openAppRole sets environment variables).
func newAppRoleStore(t *testing.T, roleIDFile, secretIDFile string) *vault.Store {
	t.Helper()
	rid, err := os.ReadFile(roleIDFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := approle.NewAppRoleAuth(string(rid), &approle.SecretID{FromFile: secretIDFile})
	if err != nil {
		t.Fatal(err)
	}
	return newStore(t, clientWith(t, ""), vault.Options{Auth: m})
}

func TestAppRoleLogin(t *testing.T) {
	rid, sid := appRole(t, "1h", "2h")
	name := uniqueName("approle")
	s := openAppRole(t, name, rid, sid)
	val := fakeKey()
	rotate(t, s, name, "", val)
	wantCurrent(t, s, name, val)

	self, err := s.Client().Auth().Token().LookupSelfWithContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pol, _ := self.TokenPolicies()
	if !contains(pol, "keywarden-rotator") {
		t.Fatalf("the AppRole token has policies %v, want keywarden-rotator", pol)
	}
	if n := vault.LoginCount(s); n != 1 {
		t.Fatalf("%d logins, want 1", n)
	}

	// A wrong secret ID is refused at open.
	bad := writeFile(t, "bad-secret-id", "00000000-0000-0000-0000-000000000000")
	addr, _, _ := vaulttest.Start(t)
	_, _, err = providers.OpenStager(context.Background(), fmt.Sprintf("vault://secret/%s?auth=approle&role_id_file=%s&secret_id_file=%s&address=%s",
		name, url.QueryEscape(rid), url.QueryEscape(bad), url.QueryEscape(addr)))
	if err == nil || codes.Of(err).Retryable() {
		t.Fatalf("AppRole login with a wrong secret ID: %v (code %v), want a non-retryable error", err, codes.Of(err))
	}
}

// TestReloginAfterRevoke revokes the driver's token behind its back: the
// next request gets 403, the driver sees the token is dead, logs in again
// and the request succeeds.
func TestReloginAfterRevoke(t *testing.T) {
	rid, sid := appRole(t, "1h", "2h")
	name := uniqueName("revoke")
	s := openAppRole(t, name, rid, sid)
	val := fakeKey()
	rotate(t, s, name, "", val)

	old := s.Client().Token()
	if err := vaulttest.Client(t).Auth().Token().RevokeTreeWithContext(context.Background(), old); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	wantCurrent(t, s, name, val)
	if s.Client().Token() == old {
		t.Fatal("the driver still holds the revoked token")
	}
	if n := vault.LoginCount(s); n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}

	// A genuine denial (a path the policy does not grant) does not log in.
	if _, err := s.Read(context.Background(), "other/kwt-"+token(), driver.Current); !codes.Is(err, codes.PermissionDenied) {
		t.Fatalf("Read outside the policy: %v, want PermissionDenied", err)
	}
	if n := vault.LoginCount(s); n != 2 {
		t.Fatalf("%d logins after a policy denial, want still 2", n)
	}
}

// TestReloginAfterMaxTTL gives the driver tokens that live 3 seconds at
// most: the LifetimeWatcher renews them until renewal can no longer extend
// them, then the driver logs in again, and reads keep working long after
// the first token died.
func TestReloginAfterMaxTTL(t *testing.T) {
	t.Parallel()
	rid, sid := appRole(t, "2s", "3s")
	name := uniqueName("maxttl")
	s := newAppRoleStore(t, rid, sid)
	val := fakeKey()
	rotate(t, s, name, "", val)
	first := s.Client().Token()

	deadline := time.Now().Add(60 * time.Second)
	for vault.LoginCount(s) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d logins after 60s with a 3s maximum TTL, want at least 3", vault.LoginCount(s))
		}
		wantCurrent(t, s, name, val)
		time.Sleep(200 * time.Millisecond)
	}
	// The first token is gone; the driver reads with a live one.
	if _, err := vaulttest.Client(t).Auth().Token().LookupWithContext(context.Background(), first); err == nil {
		t.Fatal("the first token still exists after its maximum TTL")
	}
	wantCurrent(t, s, name, val)
}

// TestStaticTokenRenewed checks that a renewable VAULT_TOKEN-style token is
// kept alive by renewal, without any login.
func TestStaticTokenRenewed(t *testing.T) {
	t.Parallel()
	writePolicies(t)
	sec, err := vaulttest.Client(t).Auth().Token().CreateWithContext(context.Background(), &api.TokenCreateRequest{
		Policies: []string{"keywarden-rotator"}, TTL: "2s", ExplicitMaxTTL: "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t, clientWith(t, sec.Auth.ClientToken), vault.Options{})
	name := uniqueName("static")
	val := fakeKey()
	rotate(t, s, name, "", val)
	// Well past the 2s TTL the token still works because it was renewed.
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		wantCurrent(t, s, name, val)
		time.Sleep(250 * time.Millisecond)
	}
	if s.Client().Token() != sec.Auth.ClientToken {
		t.Fatal("a static token was replaced")
	}
	if n := vault.LoginCount(s); n != 1 {
		t.Fatalf("%d logins with a static token, want 1 (the start)", n)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
