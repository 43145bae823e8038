package gcp_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keywarden/keywarden/internal/gcpsmfake"
	"github.com/keywarden/keywarden/providers"
	kwcodes "github.com/keywarden/keywarden/providers/codes"
	"github.com/keywarden/keywarden/providers/driver"
	"github.com/keywarden/keywarden/providers/gcp"
	"github.com/keywarden/keywarden/providers/providertest"
	"github.com/keywarden/keywarden/providers/stage"
)

const project = "kw-test"

func store(t *testing.T, opts gcp.Options) (*gcp.Store, *gcpsmfake.Server, func(ctx context.Context, name string, v []byte) error) {
	t.Helper()
	srv := gcpsmfake.Start(t)
	c := srv.Client(t)
	byHand := func(ctx context.Context, name string, v []byte) error {
		_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
			Parent: "projects/" + project, SecretId: name,
			Secret: &secretmanagerpb.Secret{Replication: &secretmanagerpb.Replication{
				Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}},
		})
		if err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
			return err
		}
		_, err = c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
			Parent: "projects/" + project + "/secrets/" + name, Payload: &secretmanagerpb.SecretPayload{Data: v}})
		return err
	}
	return gcp.New(c, project, opts), srv, byHand
}

func TestConformance(t *testing.T) {
	st, _, byHand := store(t, gcp.Options{})
	providertest.Run(t, providertest.Harness{Stager: st, PutByHand: byHand})
}

func TestHandManagedFallsBackToLatestOnlyWithoutAliases(t *testing.T) {
	ctx := context.Background()
	st, _, byHand := store(t, gcp.Options{})
	if err := byHand(ctx, "hand", []byte("sk-ant-api03-one-0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := byHand(ctx, "hand", []byte("sk-ant-api03-two-0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	v, err := st.Read(ctx, "hand", driver.Current)
	if err != nil || v.ID != "2" {
		t.Fatalf("hand-managed CURRENT: %v %v, want version 2 (latest)", v, err)
	}
	p, err := st.PutPending(ctx, "hand", "tok-1", []byte("sk-ant-api03-three-0123456789abcde"))
	if err != nil {
		t.Fatal(err)
	}
	// The pending version is now the latest; readers must not see it.
	v, err = st.Read(ctx, "hand", driver.Current)
	if err != nil || v.ID != "2" {
		t.Fatalf("CURRENT with a PENDING %s: %+v %v, want version 2", p.ID, v, err)
	}
}

func TestDisabledVersionIsFailedPrecondition(t *testing.T) {
	ctx := context.Background()
	st, srv, byHand := store(t, gcp.Options{})
	if err := byHand(ctx, "dis", []byte("sk-ant-api03-x-0123456789abcdefgh")); err != nil {
		t.Fatal(err)
	}
	c := srv.Client(t)
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: "projects/" + project + "/secrets/dis/versions/1"}); err != nil {
		t.Fatal(err)
	}
	_, err := st.Read(ctx, "dis", driver.Current)
	if !kwcodes.Is(err, kwcodes.FailedPrecondition) {
		t.Fatalf("reading a disabled version: %v (code %v), want FailedPrecondition", err, kwcodes.Of(err))
	}
}

func TestInjectedErrorsMapped(t *testing.T) {
	ctx := context.Background()
	st, srv, byHand := store(t, gcp.Options{})
	if err := byHand(ctx, "inj", []byte("sk-ant-api03-x-0123456789abcdefgh")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		code codes.Code
		want kwcodes.Code
	}{
		{codes.Unavailable, kwcodes.Unavailable},
		{codes.ResourceExhausted, kwcodes.ResourceExhausted},
		{codes.PermissionDenied, kwcodes.PermissionDenied},
		{codes.Unauthenticated, kwcodes.Unauthenticated},
		{codes.Internal, kwcodes.Unavailable},
		{codes.InvalidArgument, kwcodes.InvalidArgument},
	} {
		srv.FailNext("GetSecret", 1, tc.code)
		_, err := st.Read(ctx, "inj", driver.Current)
		if kwcodes.Of(err) != tc.want {
			t.Errorf("injected %v: got %v (%v), want %v", tc.code, kwcodes.Of(err), err, tc.want)
		}
	}
	// A stale etag on the promotion's UpdateSecret is a CAS conflict.
	p, err := st.PutPending(ctx, "inj", "tok", []byte("sk-ant-api03-y-0123456789abcdefgh"))
	if err != nil {
		t.Fatal(err)
	}
	srv.FailNext("UpdateSecret", 1, codes.FailedPrecondition)
	if err := st.Promote(ctx, "inj", p.ID, "1"); !kwcodes.Is(err, kwcodes.Aborted) {
		t.Fatalf("promote on a stale etag: %v, want Aborted", err)
	}
	if err := st.Promote(ctx, "inj", p.ID, "1"); err != nil {
		t.Fatalf("promote after the conflict: %v", err)
	}
}

// TestEtagRace puts a second writer between Promote's read and its write:
// the real etag check must refuse the first promoter.
func TestEtagRaceWithAnotherWriter(t *testing.T) {
	ctx := context.Background()
	st, srv, _ := store(t, gcp.Options{})
	a, err := st.PutPending(ctx, "race", "t1", []byte("sk-ant-api03-a-0123456789abcdefgh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, "race", a.ID, ""); err != nil {
		t.Fatal(err)
	}
	b, err := st.PutPending(ctx, "race", "t2", []byte("sk-ant-api03-b-0123456789abcdefgh"))
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client(t)
	stale, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: "projects/" + project + "/secrets/race"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, "race", b.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	// A writer holding the etag from before the promotion is refused.
	stale.VersionAliases = map[string]int64{"current": 1}
	_, err = c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: stale, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"version_aliases"}}})
	if err == nil || !strings.Contains(err.Error(), "FailedPrecondition") {
		t.Fatalf("stale etag accepted: %v", err)
	}
	v, _ := st.Read(ctx, "race", driver.Current)
	if v.ID != b.ID {
		t.Fatalf("CURRENT %s, want %s", v.ID, b.ID)
	}
}

func TestDisableOldNeverDestroys(t *testing.T) {
	ctx := context.Background()
	st, srv, _ := store(t, gcp.Options{DisableOld: true})
	cur := ""
	for i := 0; i < 4; i++ {
		p, err := st.PutPending(ctx, "old", "tok-"+string(rune('a'+i)), []byte("sk-ant-api03-"+strings.Repeat(string(rune('a'+i)), 20)))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Promote(ctx, "old", p.ID, cur); err != nil {
			t.Fatal(err)
		}
		cur = p.ID
	}
	c := srv.Client(t)
	for n, want := range map[string]secretmanagerpb.SecretVersion_State{
		"1": secretmanagerpb.SecretVersion_DISABLED, "2": secretmanagerpb.SecretVersion_DISABLED,
		"3": secretmanagerpb.SecretVersion_ENABLED, "4": secretmanagerpb.SecretVersion_ENABLED,
	} {
		v, err := c.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: "projects/" + project + "/secrets/old/versions/" + n})
		if err != nil || v.GetState() != want {
			t.Errorf("version %s: %v %v, want %v", n, v.GetState(), err, want)
		}
	}
	if d := srv.Destroyed("projects/" + project + "/secrets/old"); d != 0 {
		t.Fatalf("%d versions destroyed", d)
	}
	prev, err := st.Read(ctx, "old", driver.Previous)
	if err != nil || prev.ID != "3" {
		t.Fatalf("PREVIOUS: %v %v", prev, err)
	}
}

func TestConcurrentPutPendingOneWins(t *testing.T) {
	ctx := context.Background()
	st, _, _ := store(t, gcp.Options{})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.PutPending(ctx, "many", "tok-"+string(rune('a'+i)), []byte("sk-ant-api03-concurrent-0123456789"))
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case kwcodes.Is(err, kwcodes.FailedPrecondition):
		default:
			t.Fatalf("racing PutPending: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d racing PutPending calls won, want 1", wins)
	}
}

func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	srv := gcpsmfake.Start(t)
	_, _, err := providers.OpenStager(ctx, "gcpsm://projects/p1/secrets/s1?endpoint="+srv.Addr()+"&insecure=true")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	for _, tc := range []struct{ url, want string }{
		{"gcpsm://projects/p1/secrets", "want gcpsm://projects/PROJECT/secrets/SECRET"},
		{"gcpsm://projects/P_BAD/secrets/s", "not a project id"},
		{"gcpsm://projects/p1/secrets/bad.name", "secret id"},
		// The lengths: a project id of at most 63 bytes, a secret id of at most 255.
		{"gcpsm://projects/p" + strings.Repeat("1", 63) + "/secrets/s", "not a project id"},
		{"gcpsm://projects/p1/secrets/" + strings.Repeat("s", 256), "secret id"},
		{"gcpsm://projects/p1/secrets/s?insecure=true", "needs endpoint"},
		// Plaintext only on this machine: elsewhere the secret would come
		// back in clear text.
		{"gcpsm://projects/p1/secrets/s?insecure=true&endpoint=secretmanager.example.com:443", "insecure=true would read the secret in clear text"},
		{"gcpsm://projects/p1/secrets/s?insecure=true&endpoint=192.0.2.1:8080", "only for an endpoint on this machine"},
		{"gcpsm://projects/p1/secrets/s?region=x", "unknown parameter(s) region"},
		{"gcpsm://projects/p1/secrets/s?disable_old=maybe", "not a boolean"},
	} {
		_, _, _, err := providers.OpenDriver(ctx, tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenDriver(%q): %v, want %q", tc.url, err, tc.want)
		}
	}
	// At the bounds, the ids are taken (the fake answers for any project).
	if _, _, err := providers.OpenStager(ctx, "gcpsm://projects/p"+strings.Repeat("1", 62)+"/secrets/"+strings.Repeat("s", 255)+"?endpoint="+srv.Addr()+"&insecure=true"); err != nil {
		t.Fatalf("open at the length bounds: %v", err)
	}
	// A Source over the real client reads through the URL.
	st, name, err := providers.OpenStager(ctx, "gcpsm://projects/p1/secrets/src?endpoint="+srv.Addr()+"&insecure=true")
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.PutPending(ctx, name, "tok", []byte(`{"api_key":"sk-ant-api03-from-gcp-0123456789","key_id":"apikey_9"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, name, p.ID, ""); err != nil {
		t.Fatal(err)
	}
	src, err := providers.Open(ctx, "gcpsm://projects/p1/secrets/src?endpoint="+srv.Addr()+"&insecure=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Current().KeyID != "apikey_9" || src.Key().Reveal() != "sk-ant-api03-from-gcp-0123456789" {
		t.Fatalf("Source read %s", src.Current())
	}
	if err := st.Close(); err != nil || st.Close() != nil {
		t.Fatal("Close twice failed")
	}
}

// TestDroppedAliasesAreAnError: a backend that answers UpdateSecret with
// success but without the aliases written (some emulators drop them
// silently) makes every write that moves a stage fail, and the CURRENT
// readers had stays readable: a hand-managed secret stays hand-managed, a
// managed one keeps its aliases.
func TestDroppedAliasesAreAnError(t *testing.T) {
	ctx := context.Background()
	st, srv, byHand := store(t, gcp.Options{})
	old := providertest.FakeKey()
	if err := byHand(ctx, "hand-drop", old); err != nil {
		t.Fatal(err)
	}
	managed := providertest.FakeKey()
	providertest.Rotate(t, st, "managed-drop", managed)
	pend, err := st.PutPending(ctx, "managed-drop", providertest.Token(), providertest.FakeKey())
	if err != nil {
		t.Fatal(err)
	}
	srv.DropAliases(true)
	for _, c := range []struct {
		name  string
		write func() error
		want  []byte
	}{
		{"hand-drop", func() error { _, err := stage.Put(ctx, st, "hand-drop", providertest.FakeKey()); return err }, old},
		{"managed-drop", func() error { return st.Promote(ctx, "managed-drop", pend.ID, "1") }, managed},
		{"managed-drop", func() error { return st.DiscardPending(ctx, "managed-drop", pend.ID) }, managed},
	} {
		err := c.write()
		if err == nil || !kwcodes.Is(err, kwcodes.FailedPrecondition) {
			t.Errorf("%s: a write whose aliases were dropped: %v (code %v), want FailedPrecondition", c.name, err, kwcodes.Of(err))
		}
		v, err := st.Read(ctx, c.name, driver.Current)
		if err != nil || string(v.Value) != string(c.want) {
			t.Errorf("%s: CURRENT after a dropped write: %v; want the CURRENT from before", c.name, err)
		}
	}
	srv.DropAliases(false)
	if _, err := stage.Put(ctx, st, "hand-drop", providertest.FakeKey()); err != nil {
		t.Fatalf("put once the backend keeps aliases: %v", err)
	}
}
